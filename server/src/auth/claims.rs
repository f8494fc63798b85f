//! What a token says: whose stream it may read, to whom it may publish, and until when.

use serde::{Deserialize, Deserializer, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Claims {
    /// The user the token is for: it may read this user's streams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// More users whose streams it may read.
    #[serde(default, skip_serializing_if = "Users::is_empty")]
    pub subscribe: Users,
    /// Users it may publish to.
    #[serde(default, skip_serializing_if = "Users::is_empty")]
    pub publish: Users,
    /// Seconds since the Unix epoch. Required: a stream ends when its token expires.
    pub exp: u64,
    /// Not valid before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
}

impl Claims {
    pub fn may_subscribe(&self, user: &str) -> bool {
        self.sub.as_deref() == Some(user) || self.subscribe.include(user)
    }

    pub fn may_publish(&self, user: &str) -> bool {
        self.publish.include(user)
    }
}

/// A claim that names users: `"*"` for all, one name, or a list of names (which may hold `"*"`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Users(pub Vec<String>);

impl Users {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn include(&self, user: &str) -> bool {
        self.0.iter().any(|u| u == "*" || u == user)
    }
}

impl<'de> Deserialize<'de> for Users {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        Ok(match OneOrMany::deserialize(d)? {
            OneOrMany::One(user) => Self(vec![user]),
            OneOrMany::Many(users) => Self(users),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(json: &str) -> Claims {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn users_are_one_name_a_list_or_anyone() {
        let c = claims(r#"{"sub":"ann","exp":1,"publish":"*","subscribe":["bob","cy"]}"#);
        assert!(c.may_subscribe("ann") && c.may_subscribe("bob") && c.may_subscribe("cy"));
        assert!(!c.may_subscribe("dan"));
        assert!(c.may_publish("anyone"));
        let c = claims(r#"{"exp":1,"publish":["bob"],"subscribe":"*"}"#);
        assert!(c.may_subscribe("whoever"));
        assert!(c.may_publish("bob") && !c.may_publish("ann"));
        let c = claims(r#"{"sub":"ann","exp":1}"#);
        assert!(!c.may_publish("ann"), "sub alone grants no publishing");
        assert!(!c.may_subscribe("*"), "sub is a name, not a pattern");
    }

    #[test]
    fn exp_is_required() {
        assert!(serde_json::from_str::<Claims>(r#"{"sub":"ann"}"#).is_err());
    }
}
