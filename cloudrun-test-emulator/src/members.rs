//! IAM members as grants name them, matched against the identity of a caller.

/// Checks an IAM member (`serviceAccount:EMAIL`, `user:EMAIL`, `group:EMAIL`,
/// `domain:DOMAIN`, bare `EMAIL`, `allUsers`, `allAuthenticatedUsers`) against the
/// email of a verified token. Emails compare case-insensitively, as in IAM.
pub(crate) fn member_matches(member: &str, email: &str) -> bool {
    match member.split_once(':') {
        None => {
            member == "allUsers"
                || member == "allAuthenticatedUsers"
                || member.eq_ignore_ascii_case(email)
        }
        Some(("serviceAccount" | "user" | "group", address)) => address.eq_ignore_ascii_case(email),
        Some(("domain", domain)) => email
            .rsplit_once('@')
            .is_some_and(|(_, email_domain)| email_domain.eq_ignore_ascii_case(domain)),
        Some(_) => false,
    }
}

/// Whether [`member_matches`] understands `member`.
pub(crate) fn member_is_valid(member: &str) -> bool {
    match member.split_once(':') {
        None => member == "allUsers" || member == "allAuthenticatedUsers" || member.contains('@'),
        Some(("serviceAccount" | "user" | "group", address)) => address.contains('@'),
        Some(("domain", domain)) => !domain.is_empty(),
        Some(_) => false,
    }
}

/// An IAM member of a token-creator grant against a caller: `principal://` exactly,
/// `principalSet://.../POOL/*` for every principal of the pool, else as
/// [`member_matches`] (`serviceAccount:`, `user:`, bare email...).
pub(crate) fn caller_matches(member: &str, caller: &str) -> bool {
    if member.starts_with("principal://") {
        return member == caller;
    }
    if let Some(set) = member.strip_prefix("principalSet://") {
        let prefix = set.trim_end_matches('*');
        return caller
            .strip_prefix("principal://")
            .is_some_and(|rest| rest.starts_with(prefix));
    }
    member_matches(member, caller)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members() {
        let email = "Tester@p.iam.gserviceaccount.com";
        assert!(member_matches(
            "serviceAccount:tester@p.iam.gserviceaccount.com",
            email
        ));
        assert!(member_matches(
            "user:tester@p.iam.gserviceaccount.com",
            email
        ));
        assert!(member_matches("tester@p.iam.gserviceaccount.com", email));
        assert!(member_matches("domain:p.iam.gserviceaccount.com", email));
        assert!(member_matches("allUsers", email));
        assert!(!member_matches(
            "serviceAccount:other@p.iam.gserviceaccount.com",
            email
        ));
        assert!(!member_matches("domain:iam.gserviceaccount.com", email));
        assert!(!member_matches(
            "role:tester@p.iam.gserviceaccount.com",
            email
        ));
        assert!(member_is_valid("user:a@b"));
        assert!(!member_is_valid("nobody"));
        assert!(!member_is_valid("role:a@b"));
    }

    #[test]
    fn grants_match_callers() {
        let pool = "principalSet://iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/*";
        let principal = "principal://iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/subject/repo:a/b";
        assert!(caller_matches(pool, principal));
        assert!(caller_matches(principal, principal));
        assert!(!caller_matches(
            "principalSet://iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/q/*",
            principal
        ));
        assert!(caller_matches("user:a@example.com", "a@example.com"));
        assert!(caller_matches(
            "serviceAccount:sa@p.iam.gserviceaccount.com",
            "sa@p.iam.gserviceaccount.com"
        ));
        assert!(!caller_matches("user:b@example.com", "a@example.com"));
    }
}
