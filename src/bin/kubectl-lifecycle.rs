//! `kubectl lifecycle`: the kubectl plugin (src/plugin/).

fn main() -> std::process::ExitCode {
    lifecycle_operator::plugin::main()
}
