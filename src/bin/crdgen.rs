//! Prints a CRD generated from the Rust types (`crdgen FILE`, FILE one of
//! `lifecycle_operator::CRD_FILES`; the first without one); `crds/` holds its output.

fn main() -> anyhow::Result<()> {
    let file = std::env::args()
        .nth(1)
        .unwrap_or_else(|| lifecycle_operator::CRD_FILES[0].to_string());
    print!("{}", lifecycle_operator::crd_yaml_named(&file)?);
    Ok(())
}
