//! The hooks themselves, shared by `apply` (which puts them on templates)
//! and `verify` (which proves they ran): the two hook kinds (`hook`), the
//! marker format, written by the wrapper and read back from logs
//! (`marker`), and a policy's hooks as they go on templates (`render`).
//! Pure; depends only on `api`.

pub mod hook;
pub mod marker;
pub mod render;
