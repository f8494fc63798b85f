//! Tokens: how a pasted one is cleaned up, and what the server's refusals and the
//! `token-expiring` event mean in plain words.

use super::send::first_line;

/// `sessionStorage` key of the token: it survives a reload of the tab, and other tabs do not
/// see it.
pub const TOKEN_STORAGE_KEY: &str = "ssepush.token";

/// The token as pasted, without surrounding whitespace or a leading `Bearer ` (people paste
/// whole header values); `None` when nothing is left.
pub fn clean_token(pasted: &str) -> Option<String> {
    let token = pasted.trim();
    let token = match token.split_at_checked(6) {
        Some((scheme, rest))
            if scheme.eq_ignore_ascii_case("bearer")
                && rest.chars().next().is_none_or(char::is_whitespace) =>
        {
            rest.trim_start()
        }
        _ => token,
    };
    (!token.is_empty()).then(|| token.to_owned())
}

/// What a refused request was for, so the reason can say what the token lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Opening the stream of a user.
    Subscribe,
    /// Publishing to a user.
    Publish,
}

/// The plain-words reason for a 401 or 403 answer to a request for `username` made with a
/// token (`sent_token`) or without, given the server's one-line body; `None` for any other
/// status.
///
/// 401 means the server got no token, or one it cannot accept (bad signature, expired,
/// malformed: it does not say which); 403 with a token means one that does not cover this
/// user, and the server's line says what it lacks.
pub fn refusal(
    status: u16,
    body: &str,
    access: Access,
    username: &str,
    sent_token: bool,
) -> Option<String> {
    match status {
        401 if sent_token => Some(format!(
            "401: the token was not accepted: it has expired, is damaged, or was signed with \
             another key. Paste a current token for {username}."
        )),
        401 => Some(format!(
            "401: this server needs a token. Paste a token for {username} and press Use token."
        )),
        // Without a token a 403 is not about one (e.g. a cross-origin POST the server
        // refuses): only the server's line can say why.
        403 if !sent_token => Some(match first_line(body) {
            "" => "403: refused by the server.".to_owned(),
            line => format!("403: refused by the server: {line}."),
        }),
        403 => {
            let what = match access {
                Access::Subscribe => "to read the stream of",
                Access::Publish => "to publish to",
            };
            let said = match first_line(body) {
                "" => String::new(),
                line => format!(" (the server says: {line})"),
            };
            Some(format!(
                "403: this token does not allow you {what} {username}{said}. Paste a token \
                 for {username}."
            ))
        }
        _ => None,
    }
}

/// The notice for a `token-expiring` event, whose data is the whole seconds left.
pub fn expiring_notice(data: &str) -> String {
    match data.trim().parse::<u64>() {
        Ok(secs) => format!(
            "Your token expires in {secs} s; paste a new one to stay connected (nothing will be \
             missed)."
        ),
        Err(_) => "Your token expires soon; paste a new one to stay connected (nothing will be \
                   missed)."
            .to_owned(),
    }
}

/// The `Authorization` header value for `token`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn pasted_tokens_are_cleaned() {
        assert_eq!(
            clean_token("  abc.def.ghi \n").as_deref(),
            Some("abc.def.ghi")
        );
        assert_eq!(clean_token("Bearer abc").as_deref(), Some("abc"));
        assert_eq!(clean_token("bearer   abc").as_deref(), Some("abc"));
        assert_eq!(clean_token("Bearerabc").as_deref(), Some("Bearerabc"));
        assert_eq!(clean_token("Bearer "), None);
        assert_eq!(clean_token("bearer\tabc").as_deref(), Some("abc"));
        assert_eq!(clean_token("   "), None);
        assert_eq!(clean_token("é"), Some("é".to_owned()));
        assert_eq!(bearer("t"), "Bearer t");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn refusals_in_plain_words() {
        let body = "the token is not valid\n";
        assert_eq!(
            refusal(401, body, Access::Subscribe, "demo", false).as_deref(),
            Some("401: this server needs a token. Paste a token for demo and press Use token.")
        );
        assert_eq!(
            refusal(401, body, Access::Publish, "demo", true).as_deref(),
            Some(
                "401: the token was not accepted: it has expired, is damaged, or was signed \
                 with another key. Paste a current token for demo."
            )
        );
        let other = refusal(
            403,
            "this token may not read the streams of user \"bob\"",
            Access::Subscribe,
            "bob",
            true,
        );
        assert_eq!(
            other.as_deref(),
            Some(
                "403: this token does not allow you to read the stream of bob (the server \
                 says: this token may not read the streams of user \"bob\"). Paste a token \
                 for bob."
            )
        );
        assert_eq!(
            refusal(403, "", Access::Publish, "bob", true).as_deref(),
            Some("403: this token does not allow you to publish to bob. Paste a token for bob.")
        );
        assert_eq!(
            refusal(
                403,
                "a page from https://a.example may not post here",
                Access::Publish,
                "bob",
                false
            )
            .as_deref(),
            Some("403: refused by the server: a page from https://a.example may not post here.")
        );
        assert_eq!(
            refusal(400, "bad username", Access::Subscribe, "x", true),
            None
        );
        assert_eq!(refusal(200, "", Access::Subscribe, "x", false), None);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn expiring_notices() {
        assert_eq!(
            expiring_notice("30"),
            "Your token expires in 30 s; paste a new one to stay connected (nothing will be \
             missed)."
        );
        assert!(expiring_notice("soon").starts_with("Your token expires soon;"));
    }
}
