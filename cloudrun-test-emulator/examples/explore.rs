use cloudrun_test_emulator::{Emulator, ServiceConfig};
fn main() {
    let t = std::time::Instant::now();
    let e = Emulator::builder()
        .service(
            ServiceConfig::new("hello")
                .invoker("serviceAccount:tester@emulated-project.iam.gserviceaccount.com")
                .tag("canary"),
        )
        .start()
        .unwrap();
    eprintln!("started in {:?}", t.elapsed());
    let t = std::time::Instant::now();
    let p = e
        .write_service_account_key(
            "tester@emulated-project.iam.gserviceaccount.com",
            std::path::Path::new("/tmp/explore"),
        )
        .unwrap();
    eprintln!("key in {:?}", t.elapsed());
    println!(
        "{} {} {}",
        e.base_url(),
        p.display(),
        e.service_url("hello").unwrap()
    );
    std::thread::sleep(std::time::Duration::from_secs(600));
}
