//! The views as a person or a script reads them, pure: text per view
//! (colours by `Style`), and JSON or YAML of the very same structs, so the
//! outputs never disagree.

pub mod diff;
pub mod explain;
pub mod pod;
pub mod status;

use serde::Serialize;

use crate::plugin::cli::Output;
use crate::plugin::style::Style;

/// A view in the asked format; `text` renders it for `Output::Text`.
pub fn output<V: Serialize>(
    v: &V,
    format: Output,
    style: &Style,
    text: impl Fn(&V, &Style) -> String,
) -> anyhow::Result<String> {
    Ok(match format {
        Output::Text => text(v, style),
        Output::Json => format!("{}\n", serde_json::to_string_pretty(v)?),
        Output::Yaml => serde_yaml::to_string(v)?,
    })
}
