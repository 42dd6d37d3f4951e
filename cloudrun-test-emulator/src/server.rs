//! Start-up and shutdown: bind the listeners, build the state, route each path to
//! its endpoint, serve on a dedicated thread; connection resets are injected here,
//! at accept.
//!
//! The emulator owns its runtime (not the caller's) so that it works from plain
//! `#[test]`s and from inside any runtime, and keeps serving while the per-test
//! runtimes of `#[tokio::test]` come and go.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::{Arc, RwLock, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use axum::serve::ListenerExt as _;

use crate::front::{self, Front};
use crate::services::{Origin, Service, random_uid};
use crate::state::State;
use crate::{EmulatorBuilder, Error, Upstream, admin, iam, metadata, oauth, sts};

/// Two workers: enough for concurrent tests, cheap on small machines.
const WORKER_THREADS: usize = 2;

/// The serving thread; dropping this stops it.
pub(crate) struct Serving {
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Binds every listener and serves; returns once requests are answered.
pub(crate) fn start(builder: EmulatorBuilder) -> Result<(Arc<State>, Serving), Error> {
    let (base_listener, base_url) = bind("the Google endpoints")?;
    let mut front_listeners = Vec::new();
    let mut services = Vec::new();
    for config in builder.services {
        let mut origins = Vec::new();
        for tag in std::iter::once(None).chain(config.tags.iter().map(Some)) {
            let what = match tag {
                None => format!("service {}", config.name),
                Some(tag) => format!("tag {tag} of service {}", config.name),
            };
            let (listener, url) = bind(&what)?;
            front_listeners.push((listener, services.len(), tag.cloned()));
            origins.push(Origin {
                tag: tag.cloned(),
                url,
            });
        }
        services.push(Service {
            name: config.name,
            uid: random_uid(),
            origins,
            custom_audiences: config.custom_audiences,
            upstream: config.upstream,
            timeout: config.timeout,
            use_http2: config.use_http2,
            invokers: RwLock::new(config.invokers),
        });
    }
    let identity = builder.identity;
    let state = Arc::new(State::new(
        builder.project,
        builder.region,
        base_url,
        builder.id_token_lifetime.max(Duration::from_secs(1)),
        services,
    ));

    state.identities.configure(identity, &state.project);

    // Slow work off the start-up path: RSA keys and the upstream client.
    let keys_state = Arc::clone(&state);
    std::thread::Builder::new()
        .name("cloudrun-test-emulator-warm-up".to_owned())
        .spawn(move || {
            keys_state.keys.fill();
            // Ready before the first proxied request, which comes after a token.
            for http2 in [false, true] {
                if keys_state.services.iter().any(|service| {
                    matches!(service.upstream, Upstream::Url(_)) && service.use_http2 == http2
                }) {
                    let _ = front::upstream_client(&keys_state, http2);
                }
            }
        })
        .map_err(Error::Runtime)?;

    let google = Router::new()
        .route("/token", post(oauth::token))
        .route("/oauth2/v3/certs", get(oauth::certs))
        .route(
            "/computeMetadata/v1/instance/service-accounts/{account}/{item}",
            get(metadata::service_account),
        )
        .route(
            "/computeMetadata/v1/project/project-id",
            get(metadata::project_id),
        )
        .route(
            "/v1/projects/{project}/serviceAccounts/{resource}",
            post(iam::service_account),
        )
        .route("/v1/token", post(sts::token))
        .route(
            "/v2/projects/{project}/locations/{region}/services/{service}",
            get(admin::get_service),
        )
        .route(
            "/v2/projects/{project}/locations/{region}/services",
            get(admin::list_services),
        )
        .route(
            "/_emulator/stats",
            get(admin::stats).delete(admin::reset_stats),
        )
        .fallback(admin::fallback)
        .with_state(Arc::clone(&state));
    let fronts: Vec<(TcpListener, Router, Option<usize>)> = front_listeners
        .into_iter()
        .map(|(listener, service, tag)| {
            let front = Front {
                state: Arc::clone(&state),
                service,
                tag,
            };
            // Every method and path goes through the IAM check.
            let router = Router::new().fallback(front::handle).with_state(front);
            (listener, router, Some(service))
        })
        .collect();

    let (ready_sender, ready) = mpsc::channel();
    let (shutdown, shutdown_signal) = tokio::sync::oneshot::channel::<()>();
    let serve_state = Arc::clone(&state);
    let thread = std::thread::Builder::new()
        .name("cloudrun-test-emulator".to_owned())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(WORKER_THREADS)
                .thread_name("cloudrun-test-emulator-worker")
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    let _ = ready_sender.send(Err(error));
                    return;
                }
            };
            runtime.block_on(async move {
                let serving = serve(serve_state, base_listener, google, fronts);
                let failed = serving.is_err();
                let _ = ready_sender.send(serving);
                if !failed {
                    // Ends when the Emulator is dropped (or its sender is).
                    let _ = shutdown_signal.await;
                }
            });
            // In-flight requests are abandoned: the emulator is going away.
            runtime.shutdown_timeout(Duration::from_secs(1));
        })
        .map_err(Error::Runtime)?;

    match ready.recv() {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            let _ = thread.join();
            return Err(Error::Runtime(error));
        }
        Err(_) => {
            let _ = thread.join();
            return Err(Error::Runtime(std::io::Error::other(
                "the emulator's thread ended during start-up",
            )));
        }
    }
    tracing::info!(
        base_url = %state.base_url,
        services = state.services.len(),
        "cloudrun-test emulator started"
    );
    let serving = Serving {
        shutdown: Some(shutdown),
        thread: Some(thread),
    };
    Ok((state, serving))
}

/// Binds 127.0.0.1 on a port the OS chooses.
fn bind(what: &str) -> Result<(TcpListener, reqwest::Url), Error> {
    let bind_error = |source| Error::Bind {
        what: what.to_owned(),
        source,
    };
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(bind_error)?;
    listener.set_nonblocking(true).map_err(bind_error)?;
    let port = listener.local_addr().map_err(bind_error)?.port();
    let url = format!("http://127.0.0.1:{port}/")
        .parse()
        .map_err(|error| bind_error(std::io::Error::other(error)))?;
    Ok((listener, url))
}

/// Spawns a server task per listener; must run inside the emulator's runtime.
fn serve(
    state: Arc<State>,
    base_listener: TcpListener,
    google: Router,
    fronts: Vec<(TcpListener, Router, Option<usize>)>,
) -> Result<(), std::io::Error> {
    for (listener, router, service) in std::iter::once((base_listener, google, None)).chain(fronts)
    {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        // Connection resets are injected at accept; `tap_io` keeps `ConnectInfo<SocketAddr>`.
        let listener = FaultyListener {
            inner: listener,
            state: Arc::clone(&state),
            service,
        }
        // No Nagle delay: streamed answers (SSE, gRPC) go out as the upstream sends them.
        .tap_io(|stream| {
            let _ = stream.set_nodelay(true);
        });
        let service = router.into_make_service_with_connect_info::<SocketAddr>();
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, service).await {
                tracing::error!(%error, "an emulator listener stopped");
            }
        });
    }
    Ok(())
}

/// A listener that resets connections while a `connection-reset` fault is due for
/// its service: accepted, then closed with a TCP reset before any answer, as when
/// an instance goes away during a cold start.
struct FaultyListener {
    inner: tokio::net::TcpListener,
    state: Arc<State>,
    /// The service whose front this is; `None` for the Google endpoints.
    service: Option<usize>,
}

impl axum::serve::Listener for FaultyListener {
    type Io = tokio::net::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, peer) = axum::serve::Listener::accept(&mut self.inner).await;
            let service = self.service.map(|index| &self.state.services[index]);
            match service {
                Some(service) if self.state.faults.take_reset(&service.name) => {
                    self.state.count_fault();
                    tracing::info!(service = service.name, %peer, "connection reset (injected fault)");
                    // SO_LINGER 0: close() sends RST instead of FIN.
                    let _ = stream.set_zero_linger();
                    drop(stream);
                }
                _ => return (stream, peer),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}
