//! The matrix of outcomes: one cell per (row, principal, target), printed compactly so that a
//! reviewer sees which cell broke.

use std::fmt::Write;

/// One tried combination.
#[derive(Debug, Clone)]
pub struct Cell {
    /// The route (`METHOD path`) or DIMSE service.
    pub row: String,
    /// The principal.
    pub who: &'static str,
    /// The target (`own`, `granted`, `other`, `ghost`, `-`).
    pub target: &'static str,
    /// What came back (HTTP status, DIMSE status, `RJ` for a rejected association…).
    pub outcome: String,
    /// Whether the policy allows it.
    pub allowed: bool,
    /// What is wrong with it; empty when the cell is right.
    pub problems: Vec<String>,
    /// A known gap this cell is exempt from (see `KNOWN_GAPS`), with why.
    pub known: Option<&'static str>,
}

/// Every cell of one run.
#[derive(Debug, Default)]
pub struct Matrix {
    /// The cells, in the order they ran.
    pub cells: Vec<Cell>,
}

impl Matrix {
    /// Adds a cell and returns its index.
    pub fn push(&mut self, cell: Cell) -> usize {
        self.cells.push(cell);
        self.cells.len() - 1
    }

    /// Cells with problems that no known gap excuses.
    pub fn failures(&self) -> Vec<&Cell> {
        self.cells
            .iter()
            .filter(|c| !c.problems.is_empty() && c.known.is_none())
            .collect()
    }

    /// The matrix as text: a row per route or service, a column per principal, in each cell
    /// the outcome per target (`/`-separated, in `targets` order; `-` for a route without
    /// targets). `!` marks a failed cell, `?` a known gap, `+` an allowed one.
    pub fn render(&self, whos: &[&str], targets: &[&str]) -> String {
        let mut rows: Vec<&str> = Vec::new();
        for c in &self.cells {
            if !rows.contains(&c.row.as_str()) {
                rows.push(&c.row);
            }
        }
        let text = |row: &str, who: &str| -> String {
            let mut parts = Vec::new();
            for t in targets.iter().chain(std::iter::once(&"-")) {
                if let Some(c) = self
                    .cells
                    .iter()
                    .find(|c| c.row == row && c.who == who && c.target == *t)
                {
                    let mark = if c.problems.is_empty() {
                        if c.allowed { "+" } else { "" }
                    } else if c.known.is_some() {
                        "?"
                    } else {
                        "!"
                    };
                    parts.push(format!("{}{mark}", c.outcome));
                }
            }
            parts.join("/")
        };
        let width = rows.iter().map(|r| r.len()).max().unwrap_or(0);
        let cols: Vec<usize> = whos
            .iter()
            .map(|w| {
                rows.iter()
                    .map(|r| text(r, w).len())
                    .max()
                    .unwrap_or(0)
                    .max(w.len())
            })
            .collect();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "targets per cell: {} ('-' when the route has none); + allowed, ! FAILED, ? known gap",
            targets.join("/")
        );
        let _ = write!(out, "{:width$}", "");
        for (w, n) in whos.iter().zip(&cols) {
            let _ = write!(out, " | {w:n$}");
        }
        out.push('\n');
        for row in &rows {
            let _ = write!(out, "{row:width$}");
            for (w, n) in whos.iter().zip(&cols) {
                let _ = write!(out, " | {:n$}", text(row, w));
            }
            out.push('\n');
        }
        let mut first = true;
        for c in self.cells.iter().filter(|c| !c.problems.is_empty()) {
            if first {
                out.push_str("\nproblems:\n");
                first = false;
            }
            let tag = match c.known {
                Some(why) => format!("known gap ({why})"),
                None => "FAILED".into(),
            };
            let _ = writeln!(
                out,
                "  {tag}: {} as {} on {}: {}",
                c.row,
                c.who,
                c.target,
                c.problems.join("; ")
            );
        }
        out
    }
}
