//! Input rules for user-supplied fields. Each check returns a message that
//! names the field, collected into one 422.

/// Limits on field sizes, in characters.
pub const MAX_USERNAME: usize = 40;
pub const MAX_EMAIL: usize = 254;
pub const MIN_PASSWORD: usize = 8;
pub const MAX_PASSWORD: usize = 256;
pub const MAX_BIO: usize = 2_000;
pub const MAX_IMAGE_URL: usize = 2_048;
pub const MAX_TITLE: usize = 200;
pub const MAX_DESCRIPTION: usize = 1_000;
pub const MAX_BODY: usize = 100_000;
pub const MAX_COMMENT: usize = 10_000;
pub const MAX_TAG: usize = 64;
pub const MAX_TAGS: usize = 20;

/// Collects the messages of every failed check of one request.
#[derive(Debug, Default)]
pub struct Problems(Vec<String>);

impl Problems {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn add(&mut self, message: impl Into<String>) {
        self.0.push(message.into());
    }

    /// Records `result`'s message if it failed, and returns its value.
    pub fn check<T>(&mut self, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(message) => {
                self.0.push(message);
                None
            }
        }
    }

    pub fn into_result(self) -> Result<(), crate::error::ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(crate::error::ApiError::Invalid(self.0))
        }
    }
}

/// Checks a one-line field: no control characters, and a length in range
/// after trimming. Returns the trimmed value.
pub fn line(field: &str, value: &str, min: usize, max: usize) -> Result<String, String> {
    let value = value.trim();
    if value.chars().any(char::is_control) {
        return Err(format!("{field} must not contain control characters"));
    }
    length(field, value, min, max)?;
    Ok(value.to_string())
}

/// Checks a multi-line field: tabs and line breaks are allowed, other
/// control characters are not.
pub fn text(field: &str, value: &str, min: usize, max: usize) -> Result<String, String> {
    if value
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(format!("{field} must not contain control characters"));
    }
    if min > 0 && value.trim().is_empty() {
        return Err(format!("{field} can't be blank"));
    }
    length(field, value, 0, max)?;
    Ok(value.to_string())
}

fn length(field: &str, value: &str, min: usize, max: usize) -> Result<(), String> {
    let count = value.chars().count();
    if count < min {
        if min == 1 {
            return Err(format!("{field} can't be blank"));
        }
        return Err(format!(
            "{field} is too short (minimum is {min} characters)"
        ));
    }
    if count > max {
        return Err(format!("{field} is too long (maximum is {max} characters)"));
    }
    Ok(())
}

/// Usernames appear in URLs, so they hold letters, digits, `_`, `-` and `.`.
pub fn username(value: &str) -> Result<String, String> {
    let value = line("username", value, 1, MAX_USERNAME)?;
    // Clients resolve `.` and `..` path segments, so such a profile URL
    // could never be reached.
    if value.chars().all(|c| c == '.') {
        return Err("username must contain a letter or digit".to_string());
    }
    if !value
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err("username may contain only letters, digits, '_', '-' and '.'".to_string());
    }
    Ok(value)
}

/// Returns the address lower-cased, so that lookups ignore case.
pub fn email(value: &str) -> Result<String, String> {
    let value = line("email", value, 1, MAX_EMAIL)?;
    let mut parts = value.split('@');
    let (local, domain) = (parts.next(), parts.next());
    let well_formed = matches!((local, domain, parts.next()), (Some(l), Some(d), None)
        if !l.is_empty() && !d.is_empty() && !d.starts_with('.') && !d.ends_with('.'));
    if !well_formed || value.contains(char::is_whitespace) {
        return Err("email is invalid".to_string());
    }
    Ok(value.to_lowercase())
}

pub fn password(value: &str) -> Result<String, String> {
    if value.chars().any(char::is_control) {
        return Err("password must not contain control characters".to_string());
    }
    length("password", value, MIN_PASSWORD, MAX_PASSWORD)?;
    Ok(value.to_string())
}

/// Checks an image URL: an absolute http(s) URL, or empty to remove it.
pub fn image_url(value: &str) -> Result<String, String> {
    let value = line("image", value, 0, MAX_IMAGE_URL)?;
    let web = value.starts_with("https://") || value.starts_with("http://");
    if !value.is_empty() && !web {
        return Err("image must be an http or https URL, or empty".to_string());
    }
    if value.contains(char::is_whitespace) {
        return Err("image must be an http or https URL, or empty".to_string());
    }
    Ok(value)
}

/// Trims, drops duplicates and checks each tag.
pub fn tags(values: &[String]) -> Result<Vec<String>, String> {
    let mut tags: Vec<String> = Vec::with_capacity(values.len());
    for value in values {
        let tag = line("tagList item", value, 1, MAX_TAG)?;
        if !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    if tags.len() > MAX_TAGS {
        return Err(format!("tagList has too many tags (maximum is {MAX_TAGS})"));
    }
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_rejects_control_characters() {
        assert!(line("title", "a\u{0}b", 1, 10).is_err());
        assert!(line("title", "a\nb", 1, 10).is_err());
        assert_eq!(line("title", "  ab ", 1, 10).unwrap(), "ab");
    }

    #[test]
    fn text_allows_line_breaks() {
        assert_eq!(text("body", "a\nb\tc", 1, 10).unwrap(), "a\nb\tc");
        assert!(text("body", "a\u{7}", 1, 10).is_err());
        assert_eq!(
            text("body", "   ", 1, 10).unwrap_err(),
            "body can't be blank"
        );
    }

    #[test]
    fn lengths_count_characters() {
        assert!(line("title", "ééé", 1, 3).is_ok());
        assert_eq!(
            line("title", "éééé", 1, 3).unwrap_err(),
            "title is too long (maximum is 3 characters)"
        );
    }

    #[test]
    fn email_rules() {
        assert_eq!(email("Alice@Example.COM").unwrap(), "alice@example.com");
        for bad in ["", "alice", "a@b@c", "@x.org", "a@", "a b@x.org", "a@.x"] {
            assert!(email(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn username_rules() {
        assert_eq!(username("jöhn_d.o-e1").unwrap(), "jöhn_d.o-e1");
        for bad in ["", "a b", "a/b", "a?b", ".", "..", &"x".repeat(41)] {
            assert!(username(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn tags_are_trimmed_and_deduplicated() {
        let input = vec![" a ".to_string(), "a".to_string(), "b".to_string()];
        assert_eq!(tags(&input).unwrap(), vec!["a", "b"]);
        assert!(tags(&["".to_string()]).is_err());
        let many: Vec<String> = (0..21).map(|i| i.to_string()).collect();
        assert!(tags(&many).is_err());
    }

    #[test]
    fn image_must_be_http_url_or_empty() {
        assert_eq!(image_url("").unwrap(), "");
        assert!(image_url("https://x.org/a.png").is_ok());
        assert!(image_url("javascript:alert(1)").is_err());
        assert!(image_url("https://x.org/a b.png").is_err());
    }
}
