//! echo-worker: a small HTTP inference-worker stand-in, built like the real ones (cargo, crates
//! from the registry, a `cuda` feature that needs the CUDA toolkit at build time).
use std::net::SocketAddr;

use axum::{routing::get, routing::post, Json, Router};
use clap::Parser;
use serde::{Deserialize, Serialize};

#[cfg(feature = "cuda")]
const KERNEL_PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/echo.ptx"));

#[derive(Parser)]
#[command(name = "echo-worker", version, about = "Echoes prompts back, token by token")]
struct Args {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// Print what this build is and exit.
    #[arg(long)]
    describe: bool,
}

#[derive(Deserialize)]
struct Infer {
    prompt: String,
}

#[derive(Serialize)]
struct Inferred {
    tokens: Vec<String>,
    variant: &'static str,
}

fn variant() -> &'static str {
    if cfg!(feature = "cuda") {
        "cuda"
    } else {
        "cpu"
    }
}

fn describe() -> String {
    #[cfg(feature = "cuda")]
    let extra = format!(" (kernel: {} bytes of PTX)", KERNEL_PTX.len());
    #[cfg(not(feature = "cuda"))]
    let extra = String::new();
    format!("echo-worker {} {}{}", env!("CARGO_PKG_VERSION"), variant(), extra)
}

async fn infer(Json(body): Json<Infer>) -> Json<Inferred> {
    let tokens = body.prompt.split_whitespace().map(str::to_owned).collect();
    Json(Inferred { tokens, variant: variant() })
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    if args.describe {
        println!("{}", describe());
        return Ok(());
    }
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/v1/infer", post(infer));
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("{} listening on {}", describe(), listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
