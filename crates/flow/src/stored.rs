//! How state kept between events (a user's [`Profile`](crate::Profile), the shared
//! [`Globals`](crate::Globals)) is written to the store and read back.
//!
//! The JSON carries a format version (`"v": 1`; records written before versions existed have
//! none and read as version 1). Reading is strict: damaged JSON, a field of the wrong type or a
//! version newer than this Junction knows is an error, never an empty default — an empty
//! profile would make every milestone look new and send its message again.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The format this version of Junction writes.
pub const STATE_VERSION: u32 = 1;

#[derive(Serialize)]
struct Written<'a, T> {
    v: u32,
    #[serde(flatten)]
    state: &'a T,
}

#[derive(Deserialize)]
struct Read<T> {
    #[serde(default = "unversioned")]
    v: u32,
    #[serde(flatten)]
    state: T,
}

fn unversioned() -> u32 {
    1
}

/// Why stored state could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("not readable as JSON of the expected shape: {0}")]
    Damaged(String),
    #[error("written in format v{0}, newer than this Junction reads (v{STATE_VERSION})")]
    Newer(u32),
}

/// The stored text of a piece of state.
pub fn encode<T: Serialize>(state: &T) -> String {
    serde_json::to_string(&Written {
        v: STATE_VERSION,
        state,
    })
    .expect("state is JSON")
}

/// Reads stored state back, refusing anything it cannot read exactly.
pub fn decode<T: DeserializeOwned>(text: &str) -> Result<T, StateError> {
    let read: Read<T> =
        serde_json::from_str(text).map_err(|e| StateError::Damaged(e.to_string()))?;
    if read.v > STATE_VERSION {
        return Err(StateError::Newer(read.v));
    }
    Ok(read.state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Globals, Profile};

    #[test]
    fn state_round_trips_with_its_version() {
        let mut profile = Profile::default();
        profile.milestones.push("activated".into());
        profile.user_id = Some("u1".into());
        let text = encode(&profile);
        assert!(text.starts_with(r#"{"v":1,"#), "{text}");
        assert_eq!(decode::<Profile>(&text).unwrap(), profile);
        // Written before versions existed: read as v1.
        let legacy = r#"{"user_id":"u1","milestones":["activated"]}"#;
        assert_eq!(decode::<Profile>(legacy).unwrap(), profile);
        assert_eq!(
            decode::<Globals>(&encode(&Globals::default())).unwrap(),
            Globals::default()
        );
    }

    #[test]
    fn damaged_or_newer_state_is_an_error_not_a_default() {
        for damaged in [
            "",
            "{",
            "[]",
            "\"x\"",
            r#"{"milestones": "activated"}"#,
            r#"{"scores": 3}"#,
        ] {
            assert!(
                matches!(decode::<Profile>(damaged), Err(StateError::Damaged(_))),
                "{damaged}"
            );
        }
        assert_eq!(
            decode::<Profile>(r#"{"v": 2, "user_id": "u1"}"#),
            Err(StateError::Newer(2))
        );
        assert!(decode::<Globals>(r#"{"round_robin": {"a": "one"}}"#).is_err());
    }
}
