// A minimal inference-worker stand-in, built with cargo like the real workers.
fn variant() -> &'static str {
    if cfg!(feature = "cuda") {
        "cuda"
    } else {
        "cpu"
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--version") {
        println!("rust-hello-worker {}", env!("CARGO_PKG_VERSION"));
        return;
    }
    println!("rust-hello-worker: ready ({})", variant());
}
