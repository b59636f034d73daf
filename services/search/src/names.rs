//! Index names: a value that exists is valid.

use plinth_shared::ApiError;
use plinth_shared::names::name_problem;

/// An index name: the rule of [`plinth_shared::names`], as topics have it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IndexName(String);

impl IndexName {
    /// Parses an index name.
    ///
    /// # Errors
    ///
    /// Returns `invalid_index_name` saying which rule the name breaks.
    pub fn parse(name: &str) -> Result<IndexName, ApiError> {
        let invalid = |why: &str| ApiError::InvalidIndexName(format!("index name `{name}`: {why}"));
        if let Some(problem) = name_problem(name) {
            return Err(invalid(problem));
        }
        Ok(IndexName(name.to_owned()))
    }

    /// Returns the name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Returns the resource name scopes are checked against: `index:NAME`.
    pub fn resource(&self) -> String {
        format!("index:{}", self.0)
    }
}
