//! Who may see the dashboard: the operator, nobody else. It lists every tenant's functions and
//! decisions, so every page and API answers 401 unless the request carries
//! - `Authorization: Bearer ADMIN_TOKEN` (scripts, `curl`), or
//! - the session cookie a login gave the browser: `POST /login` with the admin token as the
//!   form field `token`, or `GET /login?code=CODE` with a one-time code (what the scheduler
//!   prints at start as its `dashboard login URL`, and `sandstorm dev` passes on), valid for
//!   [`LOGIN_CODE_TTL`] and once.
//!
//! Sessions live in memory (a restarted scheduler asks for a new login) and only their hashes
//! are kept; the cookie is `HttpOnly; SameSite=Strict`.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};

use super::super::auth::{self, TokenHash};

/// How long the one-time login code printed at start stays valid.
pub const LOGIN_CODE_TTL: Duration = Duration::from_secs(15 * 60);
/// The session cookie's name.
pub const COOKIE: &str = "sandstorm_session";
/// Most sessions held at once; the oldest is forgotten beyond that.
const MAX_SESSIONS: usize = 1024;

/// The dashboard's gate.
#[derive(Debug)]
pub struct Access {
    admin: TokenHash,
    /// The one-time code and when it expires; `None` once used.
    login_code: Mutex<Option<(TokenHash, Instant)>>,
    sessions: Mutex<(HashSet<TokenHash>, Vec<TokenHash>)>,
}

impl Access {
    /// A gate that admits the holder of the admin token whose hash is `admin`; returns it and
    /// the one-time login code.
    pub fn new(admin: TokenHash) -> Result<(Self, String), getrandom::Error> {
        let code = auth::new_secret()?;
        Ok((
            Self {
                admin,
                login_code: Mutex::new(Some((auth::hash(&code), Instant::now() + LOGIN_CODE_TTL))),
                sessions: Mutex::default(),
            },
            code,
        ))
    }

    fn new_session(&self) -> Result<String, getrandom::Error> {
        let secret = auth::new_secret()?;
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let (set, order) = &mut *sessions;
        if order.len() >= MAX_SESSIONS {
            let oldest = order.remove(0);
            set.remove(&oldest);
        }
        let hash = auth::hash(&secret);
        set.insert(hash);
        order.push(hash);
        Ok(secret)
    }

    fn is_session(&self, secret: &str) -> bool {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.0.contains(&auth::hash(secret))
    }

    /// Uses up the one-time code if `code` is it and it has not expired.
    fn take_code(&self, code: &str) -> bool {
        let mut slot = self.login_code.lock().unwrap_or_else(|e| e.into_inner());
        match *slot {
            Some((hash, expires)) if auth::matches(code, &hash) && Instant::now() < expires => {
                *slot = None;
                true
            }
            _ => false,
        }
    }

    /// Whether `headers` carry the admin token or a live session.
    fn admits(&self, headers: &HeaderMap) -> bool {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if bearer.is_some_and(|t| auth::matches(t.trim(), &self.admin)) {
            return true;
        }
        cookie(headers, COOKIE).is_some_and(|s| self.is_session(s))
    }
}

/// The value of cookie `name` in `headers`.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// The middleware: lets through what [`Access::admits`], answers 401 otherwise.
pub async fn gate(
    State(access): State<std::sync::Arc<Access>>,
    request: Request,
    next: Next,
) -> Response {
    if request.uri().path() == "/login" || access.admits(request.headers()) {
        return next.run(request).await;
    }
    let path = request.uri().path();
    if path.starts_with("/api/") {
        let body = serde_json::json!({
            "error": "the dashboard is the operator's: send `Authorization: Bearer ADMIN_TOKEN` or log in at /login"
        });
        return (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    }
    (StatusCode::UNAUTHORIZED, Html(LOGIN_PAGE)).into_response()
}

#[derive(Debug, serde::Deserialize)]
pub struct LoginQuery {
    code: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
pub struct LoginForm {
    token: String,
}

fn logged_in(access: &Access) -> Response {
    match access.new_session() {
        Ok(secret) => (
            [(
                header::SET_COOKIE,
                format!("{COOKIE}={secret}; HttpOnly; SameSite=Strict; Path=/"),
            )],
            Redirect::to("/"),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("no randomness for a session: {e}"),
        )
            .into_response(),
    }
}

/// `GET /login[?code=CODE]`: the login form, or a session for the one-time code.
pub async fn login_get(
    State(access): State<std::sync::Arc<Access>>,
    Query(q): Query<LoginQuery>,
) -> Response {
    match q.code {
        Some(code) if access.take_code(&code) => logged_in(&access),
        Some(_) => (
            StatusCode::UNAUTHORIZED,
            Html(LOGIN_PAGE.replace(
                "<!--why-->",
                "<p>That login code is not valid: it was used already, has expired, or is wrong.</p>",
            )),
        )
            .into_response(),
        None => Html(LOGIN_PAGE).into_response(),
    }
}

/// `POST /login` with `token=ADMIN_TOKEN`: a session.
pub async fn login_post(
    State(access): State<std::sync::Arc<Access>>,
    axum::Form(form): axum::Form<LoginForm>,
) -> Response {
    if auth::matches(form.token.trim(), &access.admin) {
        logged_in(&access)
    } else {
        (
            StatusCode::UNAUTHORIZED,
            Html(LOGIN_PAGE.replace("<!--why-->", "<p>That is not the admin token.</p>")),
        )
            .into_response()
    }
}

const LOGIN_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sandstorm: log in</title></head>
<body style="font-family: sans-serif; max-width: 32em; margin: 4em auto">
<h1>Sandstorm dashboard</h1>
<!--why-->
<p>The dashboard is the operator's. Paste the admin token (the scheduler's
<code>DATA_DIR/admin-token</code>), or open the one-time login URL the scheduler printed.</p>
<form method="post" action="/login">
<input type="password" name="token" autocomplete="off" size="40" autofocus>
<button type="submit">Log in</button>
</form>
</body></html>
"#;
