// Prints the OpenSSL it was linked with and a SHA-256, through the system's libssl/libcrypto.
fn main() {
    let digest = openssl::sha::sha256(b"orchestrator");
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    println!("{} sha256={hex}", openssl::version::version());
}
