//! Nesting bounds for every decoder of untrusted bytes.
//!
//! serde's decoders recurse once per level of nesting, unknown fields that are only
//! skipped included. A few kilobytes of nested one-element arrays therefore reach
//! thousands of levels, and in a debug build each level costs kilobytes of stack: one
//! small message would overflow the decoding thread's stack and abort the whole process,
//! taking every other session with it. So nothing nested deeper than [`MAX_DEPTH`] is
//! handed to serde:
//!
//! - JSON is scanned first ([`check_json`]: one pass over the bytes, no allocation);
//! - MessagePack goes through a deserializer that counts its depth and stops at the bound.
//!
//! Every message of the protocol, a tick, a `md_ref` value, a token's header and claims
//! nest at most 4 levels; the bound leaves room for unknown fields, and stays well inside
//! the stack of any thread that decodes (tested on a 256 KiB stack in a debug build).

use serde::de::DeserializeOwned;

/// Deepest nesting of arrays and objects (maps) accepted, counting the outermost one.
pub const MAX_DEPTH: usize = 32;

/// Why bytes were not decoded.
#[derive(Debug, thiserror::Error)]
pub enum NestingError {
    #[error("nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    MsgPack(#[from] rmp_serde::decode::Error),
}

/// Refuses JSON text whose arrays and objects nest deeper than [`MAX_DEPTH`]. Brackets
/// inside strings do not count. Malformed text is left for the parser to refuse.
pub fn check_json(bytes: &[u8]) -> Result<(), NestingError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(NestingError::TooDeep);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// `serde_json::from_slice`, after [`check_json`].
pub fn from_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, NestingError> {
    check_json(bytes)?;
    Ok(serde_json::from_slice(bytes)?)
}

/// `rmp_serde::from_slice`, with its depth bounded by [`MAX_DEPTH`] (rmp-serde's own
/// default, 1024, is far beyond a debug build's stack). Going deeper is
/// [`NestingError::TooDeep`].
pub fn from_msgpack<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, NestingError> {
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    // rmp-serde refuses the level at which its count reaches the bound.
    de.set_max_depth(MAX_DEPTH + 1);
    T::deserialize(&mut de).map_err(|e| match e {
        rmp_serde::decode::Error::DepthLimitExceeded => NestingError::TooDeep,
        e => NestingError::MsgPack(e),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde::Deserialize;

    /// `depth` nested one-element arrays in JSON.
    pub(crate) fn nested_json(depth: usize) -> Vec<u8> {
        let mut v = vec![b'['; depth];
        v.extend(std::iter::repeat_n(b']', depth));
        v
    }

    /// `depth` nested one-element arrays in MessagePack (fixarray of 1), around a nil.
    pub(crate) fn nested_msgpack(depth: usize) -> Vec<u8> {
        let mut v = vec![0x91; depth];
        v.push(0xc0);
        v
    }

    #[derive(Debug, Deserialize)]
    struct Anything {
        #[serde(default)]
        #[allow(dead_code)]
        x: Option<u8>,
    }

    #[test]
    fn json_depth_counts_brackets_outside_strings() {
        check_json(&nested_json(MAX_DEPTH)).unwrap();
        assert!(matches!(
            check_json(&nested_json(MAX_DEPTH + 1)),
            Err(NestingError::TooDeep)
        ));
        let quoted = format!(r#"{{"a":"{}\"[{{"}}"#, "[".repeat(1000));
        check_json(quoted.as_bytes()).unwrap();
        let json: serde_json::Value = from_json(quoted.as_bytes()).unwrap();
        assert!(json["a"].as_str().unwrap().starts_with("[[["));
    }

    #[test]
    fn msgpack_depth_is_bounded() {
        let ok: serde_json::Value = from_msgpack(&nested_msgpack(MAX_DEPTH)).unwrap();
        assert!(ok.is_array());
        assert!(matches!(
            from_msgpack::<serde_json::Value>(&nested_msgpack(MAX_DEPTH + 1)),
            Err(NestingError::TooDeep)
        ));
    }

    /// Deep input is refused on a small stack, in whatever build runs the tests: the
    /// bound, not the stack, stops it. (Without the bound these overflow and abort.)
    #[test]
    fn deep_input_is_refused_within_a_small_stack() {
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(|| {
                for depth in [MAX_DEPTH, 100_000] {
                    let json = nested_json(depth);
                    let _ = from_json::<serde_json::Value>(&json);
                    let _ = from_json::<Anything>(&json);
                    let mp = nested_msgpack(depth);
                    let _ = from_msgpack::<serde_json::Value>(&mp);
                    let _ = from_msgpack::<Anything>(&mp);
                    // An unknown field skipped at depth is what a client message meets.
                    let mut field = b"\x81\xa1y".to_vec();
                    field.extend_from_slice(&mp);
                    let _ = from_msgpack::<Anything>(&field);
                    let mut field = br#"{"y":"#.to_vec();
                    field.extend_from_slice(&json);
                    field.push(b'}');
                    let _ = from_json::<Anything>(&field);
                }
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
