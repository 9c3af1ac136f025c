//! Aligned plain-text tables, as `kubectl get` prints them: columns three
//! spaces apart, the last one unpadded, no trailing blanks.

use std::io::Write;

/// Prints `header` and `rows` as an aligned table. Tabs and line breaks in
/// a cell are shown as spaces, so a cell never breaks the layout.
pub fn print_table(out: &mut impl Write, header: &[&str], rows: &[Vec<String>]) {
    let mut tw = tabwriter::TabWriter::new(Vec::new()).minwidth(0).padding(3);
    let lines = std::iter::once(header.iter().map(|h| h.to_string()).collect::<Vec<_>>())
        .chain(rows.iter().cloned());
    for cells in lines {
        let cells: Vec<String> = cells
            .iter()
            .map(|c| c.replace(['\t', '\n', '\r'], " "))
            .collect();
        let _ = writeln!(tw, "{}", cells.join("\t"));
    }
    let text = tw
        .into_inner()
        .map(|b| String::from_utf8_lossy(&b).into_owned());
    for line in text.unwrap_or_default().lines() {
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_three_spaces_apart_and_lines_end_without_blanks() {
        let mut out = Vec::new();
        let rows = vec![
            vec!["prometheus".to_owned(), "Service".into(), "".into()],
            vec!["a".into(), "Backup".into(), "∞/2".into()],
        ];
        print_table(&mut out, &["NAME", "KIND", "STATE"], &rows);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "NAME         KIND      STATE\nprometheus   Service\na            Backup    ∞/2\n"
        );
    }

    #[test]
    fn a_tab_or_newline_in_a_cell_keeps_the_layout() {
        let mut out = Vec::new();
        let rows = vec![vec!["a\tb".to_owned(), "x\ny".into()]];
        print_table(&mut out, &["N", "M"], &rows);
        assert_eq!(String::from_utf8(out).unwrap(), "N     M\na b   x y\n");
    }
}
