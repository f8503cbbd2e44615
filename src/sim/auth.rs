//! Who is calling: the `Authorization` header checked as the Console checks it (a bearer
//! token it issued, or Basic credentials when allowed), and whether that caller may see
//! the tenant the request names.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hyper::header::AUTHORIZATION;
use hyper::HeaderMap;

use super::jwt::Claims;
use super::options::SimUser;
use super::state::State;

/// An authenticated caller.
pub(super) struct Caller {
    /// The account, as configured.
    pub(super) user: SimUser,
    /// How it proved who it is.
    pub(super) credential: Credential,
}

/// The credential a request was accepted with.
pub(super) enum Credential {
    /// A bearer token this Console issued.
    Token(Claims),
    /// Basic authentication.
    Basic,
}

impl Caller {
    /// The name the credential is counted under in the statistics.
    pub(super) fn credential_key(&self) -> String {
        match &self.credential {
            Credential::Token(claims) => claims.jti.clone(),
            Credential::Basic => format!("basic:{}", self.user.username),
        }
    }

    /// The token's claims, when the caller used one.
    pub(super) fn token(&self) -> Option<&Claims> {
        match &self.credential {
            Credential::Token(claims) => Some(claims),
            Credential::Basic => None,
        }
    }

    /// Whether the caller may make a request naming these `project` values: a user
    /// limited to some tenants must name at least one project, and only its own.
    pub(super) fn may_see(&self, projects: &[String]) -> bool {
        match &self.user.projects {
            None => true,
            Some(own) => !projects.is_empty() && projects.iter().all(|p| own.contains(p)),
        }
    }
}

/// The caller identified by the request's `Authorization` header, or `None` when it is
/// missing, malformed, expired, revoked or names a scheme this Console does not accept.
pub(super) fn identify(state: &State, headers: &HeaderMap) -> Option<Caller> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credential) = value.split_once(' ')?;
    let credential = credential.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        bearer(state, credential)
    } else if scheme.eq_ignore_ascii_case("basic") && state.basic_auth {
        basic(state, credential)
    } else {
        None
    }
}

fn bearer(state: &State, token: &str) -> Option<Caller> {
    let claims = state
        .verify_token(token)
        .inspect_err(|why| tracing::debug!(token.rejection = ?why, "sim: bearer refused"))
        .ok()?;
    Some(Caller {
        user: state.user(&claims.user)?,
        credential: Credential::Token(claims),
    })
}

fn basic(state: &State, encoded: &str) -> Option<Caller> {
    let decoded = String::from_utf8(STANDARD.decode(encoded).ok()?).ok()?;
    let (username, password) = decoded.split_once(':')?;
    let user = state.check_password(username, password);
    if user.is_none() {
        tracing::debug!(user.name = %username, "sim: basic credentials refused");
    }
    Some(Caller {
        user: user?,
        credential: Credential::Basic,
    })
}
