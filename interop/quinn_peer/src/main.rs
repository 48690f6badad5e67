//! quicconn's independent DATAGRAM peer: a QUIC server on quinn that echoes
//! every DATAGRAM frame (RFC 9221) it receives, prefixed with "echo:", and
//! answers a stream (bidi) with its own bytes: `quinn-peer CERT KEY ADDR ALPN`.
//! Prints "ready PORT" once it listens; one line per datagram on stdout.
use std::io::{BufReader, Write};
use std::net::SocketAddr;
use std::sync::Arc;

fn load(cert: &str, key: &str) -> (Vec<rustls::Certificate>, rustls::PrivateKey) {
    let mut certs = BufReader::new(std::fs::File::open(cert).expect("cert"));
    let chain = rustls_pemfile::certs(&mut certs)
        .expect("certs")
        .into_iter()
        .map(rustls::Certificate)
        .collect();
    let mut keys = BufReader::new(std::fs::File::open(key).expect("key"));
    let key = rustls_pemfile::pkcs8_private_keys(&mut keys).expect("pkcs8 key");
    (chain, rustls::PrivateKey(key[0].clone()))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (chain, key) = load(&args[1], &args[2]);
    let addr: SocketAddr = args[3].parse().expect("address");
    let mut crypto = rustls::ServerConfig::builder()
        .with_safe_defaults()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("certificate");
    crypto.alpn_protocols = vec![args[4].as_bytes().to_vec()];
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.datagram_receive_buffer_size(Some(1 << 20));
    config.transport = Arc::new(transport);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let endpoint = quinn::Endpoint::server(config, addr).expect("bind");
        println!("ready {}", endpoint.local_addr().expect("addr").port());
        std::io::stdout().flush().ok();
        while let Some(connecting) = endpoint.accept().await {
            tokio::spawn(async move {
                let connection = match connecting.await {
                    Ok(c) => c,
                    Err(e) => {
                        println!("handshake failed: {}", e);
                        return;
                    }
                };
                println!(
                    "connected max_datagram_size={:?}",
                    connection.max_datagram_size()
                );
                std::io::stdout().flush().ok();
                loop {
                    match connection.read_datagram().await {
                        Ok(data) => {
                            println!("datagram {}", data.len());
                            std::io::stdout().flush().ok();
                            let mut reply = b"echo:".to_vec();
                            reply.extend_from_slice(&data);
                            if let Err(e) = connection.send_datagram(reply.into()) {
                                println!("send failed: {}", e);
                            }
                        }
                        Err(e) => {
                            println!("closed: {}", e);
                            std::io::stdout().flush().ok();
                            return;
                        }
                    }
                }
            });
        }
    });
}
