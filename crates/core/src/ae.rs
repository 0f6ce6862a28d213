//! Application Entity titles (PS3.5 Table 6.2-1, VR AE).

/// Whether `title`, with its insignificant leading and trailing spaces removed, is an AE title:
/// 1-16 characters of the default repertoire without backslash or control characters.
pub fn valid_ae_title(title: &str) -> bool {
    let t = title.trim();
    !t.is_empty()
        && t.len() <= 16
        && t.chars()
            .all(|c| c.is_ascii() && !c.is_ascii_control() && c != '\\')
}

#[cfg(test)]
mod tests {
    use super::valid_ae_title;

    #[test]
    fn ae_titles() {
        assert!(valid_ae_title("VESALIUS"));
        assert!(valid_ae_title(" CT 2 "));
        for bad in ["", "   ", "A\\B", "TOO_LONG_AE_TITLE", "CT\u{7f}", "CTÉ"] {
            assert!(!valid_ae_title(bad), "{bad:?}");
        }
    }
}
