//! Topic names: a value that exists is valid.

use plinth_shared::ApiError;
use plinth_shared::names::name_problem;

/// A topic name: 1 to 128 of ASCII letters, digits, `.`, `_` and `-`, as Kafka allows, minus
/// the names `.` and `..`. Kafka topic names are built from the project and this name, so
/// every valid name is also a valid Kafka topic name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TopicName(String);

impl TopicName {
    /// Parses a topic name.
    ///
    /// # Errors
    ///
    /// Returns `invalid_topic_name` saying which rule the name breaks.
    pub fn parse(name: &str) -> Result<TopicName, ApiError> {
        let invalid = |why: &str| ApiError::InvalidTopicName(format!("topic name `{name}`: {why}"));
        if let Some(problem) = name_problem(name) {
            return Err(invalid(problem));
        }
        Ok(TopicName(name.to_owned()))
    }

    /// Returns the name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Returns the resource name scopes are checked against: `topic:NAME`.
    pub fn resource(&self) -> String {
        format!("topic:{}", self.0)
    }
}

/// A subscription name: the rules of [`TopicName`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SubscriptionName(String);

impl SubscriptionName {
    /// Parses a subscription name.
    ///
    /// # Errors
    ///
    /// Returns `invalid_subscription_name` saying which rule the name breaks.
    pub fn parse(name: &str) -> Result<SubscriptionName, ApiError> {
        match TopicName::parse(name) {
            Ok(valid) => Ok(SubscriptionName(valid.0)),
            Err(err) => Err(ApiError::InvalidSubscriptionName(err.to_string().replacen(
                "topic name",
                "subscription name",
                1,
            ))),
        }
    }

    /// Returns the name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn kafka_style_names_pass_and_others_say_why_not() {
        for good in [
            "orders",
            "Orders.v2",
            "a",
            "user_events-2026",
            &"x".repeat(128),
        ] {
            assert_eq!(TopicName::parse(good).unwrap().as_str(), good);
        }
        for (bad, why) in [
            ("", "1 to 128"),
            (&"x".repeat(129), "1 to 128"),
            ("a/b", "only letters"),
            ("with space", "only letters"),
            ("é", "only letters"),
            ("..", "must not be"),
        ] {
            let err = TopicName::parse(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    proptest! {
        #[test]
        fn a_parsed_name_holds_only_allowed_bytes(name in "\\PC{0,140}") {
            if let Ok(parsed) = TopicName::parse(&name) {
                prop_assert!(parsed.as_str().bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)));
                prop_assert!((1..=128).contains(&parsed.as_str().len()));
            }
        }
    }
}
