//! URL slugs for article titles in any script.

/// The maximum length of a slug stem, in bytes, before a uniqueness suffix.
const MAX_STEM: usize = 80;

/// Derives a slug stem from a title. Titles in any script are transliterated
/// to ASCII (emoji become their names); a title that leaves nothing, such as
/// one of only spaces or invisible characters, gets `article`.
pub fn stem(title: &str) -> String {
    let full = slug::slugify(title);
    let mut stem = String::with_capacity(MAX_STEM);
    for word in full.split('-').filter(|w| !w.is_empty()) {
        let extra = if stem.is_empty() { 0 } else { 1 };
        if stem.len() + extra + word.len() > MAX_STEM {
            if stem.is_empty() {
                stem.push_str(&word[..MAX_STEM]);
            }
            break;
        }
        if extra == 1 {
            stem.push('-');
        }
        stem.push_str(word);
    }
    if stem.is_empty() {
        stem.push_str("article");
    }
    stem
}

/// Makes a slug unique by appending the article's identifier in base 36.
pub fn with_suffix(stem: &str, id: i64) -> String {
    let mut digits = Vec::new();
    let mut rest = id.unsigned_abs();
    loop {
        digits.push(char::from_digit((rest % 36) as u32, 36).expect("digit below 36"));
        rest /= 36;
        if rest == 0 {
            break;
        }
    }
    let suffix: String = digits.iter().rev().collect();
    format!("{stem}-{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stem_of_latin_title() {
        assert_eq!(
            stem("How to Train Your Dragon!"),
            "how-to-train-your-dragon"
        );
    }

    #[test]
    fn stem_of_other_scripts() {
        assert_eq!(stem("Привет мир"), "privet-mir");
        assert!(!stem("東京の写真").is_empty());
        assert_ne!(stem("東京の写真"), "article");
        // deunicode names emoji, so an emoji title still gives words.
        assert!(stem("🙂🙂")
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'-'));
        assert!(!stem("🙂🙂").is_empty());
        assert_eq!(stem("\u{200b}"), "article");
        assert_eq!(stem("   "), "article");
    }

    #[test]
    fn stem_is_bounded() {
        let long = "word ".repeat(100);
        let s = stem(&long);
        assert!(s.len() <= MAX_STEM);
        assert!(!s.ends_with('-'));
        assert_eq!(stem(&"x".repeat(500)).len(), MAX_STEM);
    }

    #[test]
    fn suffix_is_base_36() {
        assert_eq!(with_suffix("a", 35), "a-z");
        assert_eq!(with_suffix("a", 36), "a-10");
    }
}
