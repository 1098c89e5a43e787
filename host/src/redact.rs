//! Removing secrets from text that may reach a client or a log: upstream
//! error messages can echo a key back.
//!
//! Redacted: `Bearer <token>`, words that look like provider keys (`sk-`,
//! `gsk_`, `AIza`, `csk-`, `glsa_`, `nvapi-` followed by 16+ key characters)
//! and runs of 32+ hex digits.

const KEY_PREFIXES: &[&str] = &["sk-", "gsk_", "AIza", "csk-", "glsa_", "nvapi-"];

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// Returns `text` with secrets replaced by `[REDACTED]`, `[REDACTED_KEY]` or
/// `[REDACTED_HEX]`.
pub fn redact_secrets(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut after_bearer = false;
    while !rest.is_empty() {
        let start = rest.find(is_key_char).unwrap_or(rest.len());
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest.find(|c: char| !is_key_char(c)).unwrap_or(rest.len());
        let word = &rest[..end];
        rest = &rest[end..];
        if word.is_empty() {
            continue;
        }
        if after_bearer {
            out.push_str("[REDACTED]");
            after_bearer = false;
            continue;
        }
        if word.eq_ignore_ascii_case("bearer") && rest.starts_with(' ') {
            after_bearer = true;
            out.push_str(word);
        } else if KEY_PREFIXES.iter().any(|p| word.starts_with(p) && word.len() >= p.len() + 16) {
            out.push_str("[REDACTED_KEY]");
        } else if word.len() >= 32 && word.chars().all(|c| c.is_ascii_hexdigit()) {
            out.push_str("[REDACTED_HEX]");
        } else {
            out.push_str(word);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::redact_secrets;

    #[test]
    fn bearer_tokens_are_redacted() {
        assert_eq!(redact_secrets("bad header Bearer abc.def"), "bad header Bearer [REDACTED].def");
        assert_eq!(redact_secrets("Authorization: Bearer gsk_x"), "Authorization: Bearer [REDACTED]");
    }

    #[test]
    fn provider_key_shapes_are_redacted() {
        assert_eq!(redact_secrets("Invalid API Key: gsk_abcdefghijklmnopqrstuv!"), "Invalid API Key: [REDACTED_KEY]!");
        assert_eq!(redact_secrets("key AIzaSyA1234567890123456789 bad"), "key [REDACTED_KEY] bad");
    }

    #[test]
    fn long_hex_is_redacted_and_normal_text_kept() {
        let hex = "0123456789abcdef0123456789abcdef";
        assert_eq!(redact_secrets(&format!("id {hex}")), "id [REDACTED_HEX]");
        let plain = "The model `llama3` does not exist (code 404).";
        assert_eq!(redact_secrets(plain), plain);
        assert_eq!(redact_secrets("sk-short"), "sk-short");
    }
}
