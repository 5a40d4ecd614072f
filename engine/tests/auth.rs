//! JWT authentication and permissions, end to end, on both drivers.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use shardcast::policy::auth::Namespace;
use shardcast::DriverKind;
use tungstenite::client::IntoClientRequest;

const SECRET: &str = "test-secret";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn key_path(name: &str) -> String {
    format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn hs256(claims: serde_json::Value, secret: &str) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn pem_token(alg: Algorithm, file: &str, claims: serde_json::Value) -> String {
    let pem = std::fs::read(key_path(file)).unwrap();
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem).unwrap(),
        _ => EncodingKey::from_ec_pem(&pem).unwrap(),
    };
    encode(&Header::new(alg), &claims, &key).unwrap()
}

fn start_auth(d: DriverKind) -> shardcast::Handle {
    let mut cfg = config(d);
    cfg.auth.hmac_secret = Some(SECRET.into());
    cfg.auth.rsa_public_key_file = Some(key_path("rsa_public.pem"));
    cfg.auth.ec_public_key_file = Some(key_path("ec_public.pem"));
    cfg.namespaces.insert(
        "ro".into(),
        Namespace {
            client_publish: false,
            ..Namespace::default()
        },
    );
    start(cfg)
}

/// Connect with the token in the query (or None), returning the socket after the 101.
fn connect(addr: std::net::SocketAddr, token: Option<&str>) -> Ws {
    match token {
        Some(t) => ws(addr, &format!("/ws?token={t}")),
        None => ws(addr, "/ws"),
    }
}

fn refused_tokens_get_their_close_codes(d: DriverKind) {
    let h = start_auth(d);
    let addr = h.local_addr();
    assert_eq!(recv_close_code(&mut connect(addr, None)), 4501, "no token");
    let forged = hs256(serde_json::json!({"sub":"u1"}), "other-secret");
    assert_eq!(
        recv_close_code(&mut connect(addr, Some(&forged))),
        4501,
        "bad signature"
    );
    assert_eq!(
        recv_close_code(&mut connect(addr, Some("not.a.jwt"))),
        4501,
        "malformed"
    );
    let expired = hs256(serde_json::json!({"sub":"u1","exp":now() - 10}), SECRET);
    assert_eq!(
        recv_close_code(&mut connect(addr, Some(&expired))),
        4503,
        "expired"
    );
    h.shutdown();
}

fn claims_decide_channels(d: DriverKind) {
    let h = start_auth(d);
    let addr = h.local_addr();
    let claims = serde_json::json!({"sub":"u1","exp":now() + 600,"subscribe":["news","chat:*"]});
    let mut c = connect(addr, Some(&hs256(claims, SECRET)));
    subscribe(&mut c, 1, "news");
    subscribe(&mut c, 2, "chat:7");
    send(&mut c, r#"{"id":3,"op":"subscribe","channel":"secret"}"#);
    assert_eq!(recv_json(&mut c)["error"]["code"], 103, "denied channel");
    // No publish claim: the namespace decides.
    send(
        &mut c,
        r#"{"id":4,"op":"publish","channel":"ro:1","data":1}"#,
    );
    assert_eq!(recv_json(&mut c)["error"]["code"], 103);
    send(
        &mut c,
        r#"{"id":5,"op":"publish","channel":"chat:7","data":1}"#,
    );
    let mut saw_ack = false;
    for _ in 0..2 {
        let m = recv_json(&mut c);
        saw_ack |= m["id"] == 5 && m["ok"]["offset"] == 1;
    }
    assert!(saw_ack);
    h.shutdown();
}

fn rs256_and_es256_in_header_or_query(d: DriverKind) {
    let h = start_auth(d);
    let addr = h.local_addr();
    let claims = serde_json::json!({"sub":"u2","exp":now() + 600});
    let rs = pem_token(Algorithm::RS256, "rsa_private.pem", claims.clone());
    let mut c = connect(addr, Some(&rs));
    subscribe(&mut c, 1, "a");
    let es = pem_token(Algorithm::ES256, "ec_private.pem", claims);
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    req.headers_mut()
        .insert("Authorization", format!("Bearer {es}").parse().unwrap());
    let (mut c2, _) = tungstenite::connect(req).unwrap();
    subscribe(&mut c2, 1, "a");
    h.shutdown();
}

fn refresh_extends_and_expiry_closes(d: DriverKind) {
    let h = start_auth(d);
    let addr = h.local_addr();
    let short = hs256(serde_json::json!({"sub":"u3","exp":now() + 2}), SECRET);
    let mut kept = connect(addr, Some(&short));
    let mut lapsed = connect(addr, Some(&short));
    let longer = hs256(serde_json::json!({"sub":"u3","exp":now() + 600}), SECRET);
    send(
        &mut kept,
        &format!(r#"{{"id":1,"op":"refresh","token":"{longer}"}}"#),
    );
    assert_eq!(recv_json(&mut kept), serde_json::json!({"id":1,"ok":{}}));
    let other = hs256(
        serde_json::json!({"sub":"someone-else","exp":now() + 600}),
        SECRET,
    );
    send(
        &mut kept,
        &format!(r#"{{"id":2,"op":"refresh","token":"{other}"}}"#),
    );
    assert_eq!(recv_json(&mut kept)["error"]["code"], 101);
    // Not refreshed: closed with 4503 once exp passes.
    assert_eq!(recv_close_code(&mut lapsed), 4503);
    std::thread::sleep(Duration::from_millis(200));
    subscribe(&mut kept, 3, "still-here");
    h.shutdown();
}

/// Refused connections churn through connection keys and descriptor slots: a
/// late operation of a closed connection must never touch the next one there.
fn churn_of_refused_connections(d: DriverKind) {
    let h = start_auth(d);
    let addr = h.local_addr();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                for i in 0..150 {
                    let (mut c, _) = tungstenite::connect(format!("ws://{addr}/ws"))
                        .unwrap_or_else(|e| panic!("thread {t} connection {i}: {e}"));
                    if let tungstenite::stream::MaybeTlsStream::Plain(s) = c.get_mut() {
                        s.set_read_timeout(Some(TIMEOUT)).unwrap();
                    }
                    assert_eq!(recv_close_code(&mut c), 4501);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    h.shutdown();
}

fn a_user_holds_at_most_conns_per_user_max(d: DriverKind) {
    let mut cfg = config(d);
    cfg.auth.hmac_secret = Some(SECRET.into());
    cfg.limits.conns_per_user_max = 2;
    let h = start(cfg);
    let addr = h.local_addr();
    let alice = hs256(serde_json::json!({"sub":"alice","exp":now() + 600}), SECRET);
    let bob = hs256(serde_json::json!({"sub":"bob","exp":now() + 600}), SECRET);
    let mut first = connect(addr, Some(&alice));
    let mut second = connect(addr, Some(&alice));
    subscribe(&mut first, 1, "a");
    subscribe(&mut second, 1, "a");
    assert_eq!(
        recv_close_code(&mut connect(addr, Some(&alice))),
        4504,
        "a third connection of the same user"
    );
    // An SSE stream counts too, and is refused before it starts.
    let (st, _) = http(
        addr,
        "GET",
        &format!("/sse?channels=a&token={alice}"),
        &[],
        b"",
    );
    assert_eq!(st, 429);
    let mut other = connect(addr, Some(&bob));
    subscribe(&mut other, 1, "a");
    // Closing one gives its slot back (the count is released on every close path).
    drop(first);
    eventually("alice may connect again", || {
        let mut c = connect(addr, Some(&alice));
        send(&mut c, r#"{"id":1,"op":"ping"}"#);
        matches!(c.read(), Ok(tungstenite::Message::Text(_)))
    });
    h.shutdown();
}

/// A token without `exp` would never expire: refused like an invalid one
/// (4501, SSE 401) unless `auth.exp_required = false`.
fn tokens_without_exp_are_refused_unless_allowed(d: DriverKind) {
    let h = start_auth(d);
    let addr = h.local_addr();
    let forever = hs256(serde_json::json!({"sub":"u9"}), SECRET);
    assert_eq!(
        recv_close_code(&mut connect(addr, Some(&forever))),
        4501,
        "no exp"
    );
    let (st, _) = http(
        addr,
        "GET",
        &format!("/sse?channels=a&token={forever}"),
        &[],
        b"",
    );
    assert_eq!(st, 401);
    let mut c = connect(
        addr,
        Some(&hs256(
            serde_json::json!({"sub":"u9","exp":now() + 600}),
            SECRET,
        )),
    );
    send(
        &mut c,
        &format!(r#"{{"id":1,"op":"refresh","token":"{forever}"}}"#),
    );
    assert_eq!(
        recv_json(&mut c)["error"]["code"],
        101,
        "refresh to a token without exp"
    );
    h.shutdown();

    let mut cfg = config(d);
    cfg.auth.hmac_secret = Some(SECRET.into());
    cfg.auth.exp_required = false;
    let h = start(cfg);
    let mut c = connect(h.local_addr(), Some(&forever));
    subscribe(&mut c, 1, "a");
    h.shutdown();
}

both_drivers!(
    tokens_without_exp_are_refused_unless_allowed,
    a_user_holds_at_most_conns_per_user_max,
    refused_tokens_get_their_close_codes,
    claims_decide_channels,
    rs256_and_es256_in_header_or_query,
    refresh_extends_and_expiry_closes,
    churn_of_refused_connections,
);
