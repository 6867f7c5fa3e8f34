fn main() {
    println!("{}", greet::greeting());
}
