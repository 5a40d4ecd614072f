//! An application router that embeds shardcast and publishes into it.
//!
//! The router serves its own HTTP endpoint (here a tiny std one on :8081; in a
//! real service, your web framework), and whenever an order changes it
//! publishes to `orders:<id>`. Browsers subscribe on the engine's port:
//!
//! ```sh
//! cargo run --release -p shardcast --example router
//! websocat 'ws://127.0.0.1:8080/ws?subscribe=orders:42' &
//! curl -XPOST 'localhost:8081/orders/42?status=shipped'
//! ```

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::time::Duration;

use shardcast::{Config, Engine};

fn main() -> std::io::Result<()> {
    let cfg = Config {
        listen: "127.0.0.1:8080".parse().expect("address"),
        ..Config::default()
    };
    let engine = Engine::start(cfg)?;
    println!(
        "engine on {} ({} shards, {})",
        engine.local_addr(),
        engine.shards(),
        engine.driver().as_str()
    );

    let app = TcpListener::bind("127.0.0.1:8081")?;
    println!("router on 127.0.0.1:8081: POST /orders/<id>?status=<s>");
    for stream in app.incoming() {
        let mut stream = stream?;
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line)?;
        // "POST /orders/42?status=shipped HTTP/1.1"
        let target = line.split_whitespace().nth(1).unwrap_or("");
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let id = path.strip_prefix("/orders/").unwrap_or("");
        let status = query.strip_prefix("status=").unwrap_or("unknown");
        let reply = if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
        } else {
            // Raw JSON: it reaches subscribers byte for byte.
            let data = format!(
                r#"{{"order":"{id}","status":"{}"}}"#,
                status.replace(['"', '\\'], "")
            );
            match engine.publish(&format!("orders:{id}"), data, Duration::from_secs(1)) {
                Ok(p) => {
                    let body = format!(r#"{{"offset":{},"epoch":"{}"}}"#, p.offset, p.epoch);
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                }
                Err(e) => {
                    let body = e.to_string();
                    format!("HTTP/1.1 503 Service Unavailable\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
                }
            }
        };
        stream.write_all(reply.as_bytes())?;
    }
    Ok(())
}
