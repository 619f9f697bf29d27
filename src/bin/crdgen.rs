//! Prints the LifecyclePolicy CRD generated from the Rust types; `crds/` holds its output.

fn main() -> anyhow::Result<()> {
    print!("{}", lifecycle_operator::crd_yaml()?);
    Ok(())
}
