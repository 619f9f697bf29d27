//! Colours, pure once decided: only when stdout is a terminal and
//! `NO_COLOR` is unset or empty (no-color.org). Snapshot tests render with
//! [`Style::plain`].

use std::io::IsTerminal;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Style {
    pub color: bool,
}

impl Style {
    pub fn plain() -> Self {
        Style { color: false }
    }

    /// Whether to colour, from what the environment says.
    pub fn decide(terminal: bool, no_color: Option<&str>) -> Self {
        Style {
            color: terminal && no_color.is_none_or(str::is_empty),
        }
    }

    /// For this process's stdout.
    pub fn for_stdout() -> Self {
        let no_color = std::env::var("NO_COLOR").ok();
        Self::decide(std::io::stdout().is_terminal(), no_color.as_deref())
    }

    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }

    pub fn bold(&self, s: &str) -> String {
        self.paint("1", s)
    }
    pub fn good(&self, s: &str) -> String {
        self.paint("32", s)
    }
    pub fn bad(&self, s: &str) -> String {
        self.paint("31", s)
    }
    pub fn warn(&self, s: &str) -> String {
        self.paint("33", s)
    }

    /// A condition's status: True green, False red, the rest yellow. (Some
    /// conditions are good when False, Conflict say; the word stays as it is.)
    pub fn status(&self, s: &str) -> String {
        let padded = format!("{s:<7}");
        match s {
            "True" => self.good(&padded),
            "False" => self.bad(&padded),
            _ => self.warn(&padded),
        }
    }

    pub fn phase(&self, s: &str) -> String {
        match s {
            "Complete" => self.good(s),
            "Halted" => self.bad(s),
            _ => self.warn(s),
        }
    }

    pub fn state(&self, s: &str) -> String {
        match s {
            "Patched" | "UpToDate" => self.good(s),
            "Error" | "Contested" | "LedgerDamaged" | "Reverted" => self.bad(s),
            _ => self.warn(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        assert!(Style::decide(true, None).color);
        assert!(Style::decide(true, Some("")).color);
        assert!(!Style::decide(true, Some("1")).color);
        assert!(!Style::decide(false, None).color);
        assert_eq!(Style::plain().bad("x"), "x");
        assert_eq!(Style::decide(true, None).bad("x"), "\x1b[31mx\x1b[0m");
    }
}
