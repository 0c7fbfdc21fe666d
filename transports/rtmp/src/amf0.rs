//! AMF0 values: the encoding of RTMP command and data messages.
//!
//! Only what an RTMP ingest needs: numbers, booleans, strings, objects,
//! ECMA and strict arrays, null, undefined and dates are read; references,
//! typed objects and AMF3 values are refused. Reading is bounded: nesting
//! deeper than [`MAX_DEPTH`] and more than [`MAX_VALUES`] values in one
//! message are errors, so a hostile peer cannot make the reader recurse or
//! allocate without limit.

use std::fmt;

/// Objects and arrays nested deeper than this are refused.
pub const MAX_DEPTH: usize = 16;
/// Values in one message, at most (every nested value counts).
pub const MAX_VALUES: usize = 4096;

const NUMBER: u8 = 0x00;
const BOOLEAN: u8 = 0x01;
const STRING: u8 = 0x02;
const OBJECT: u8 = 0x03;
const NULL: u8 = 0x05;
const UNDEFINED: u8 = 0x06;
const ECMA_ARRAY: u8 = 0x08;
const OBJECT_END: u8 = 0x09;
const STRICT_ARRAY: u8 = 0x0a;
const DATE: u8 = 0x0b;
const LONG_STRING: u8 = 0x0c;

/// One AMF0 value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Number(f64),
    Boolean(bool),
    String(String),
    /// An anonymous object: its properties in order.
    Object(Vec<(String, Value)>),
    Null,
    Undefined,
    /// An associative array (`onMetaData` uses it).
    EcmaArray(Vec<(String, Value)>),
    StrictArray(Vec<Value>),
    /// Milliseconds since the Unix epoch (the time zone is ignored).
    Date(f64),
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_number(&self) -> Option<f64> {
        match self {
            Value::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// A property of an object or ECMA array.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(props) | Value::EcmaArray(props) => {
                props.iter().find(|(k, _)| k == key).map(|(_, v)| v)
            }
            _ => None,
        }
    }
}

/// Why AMF0 bytes could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AmfError {
    /// The bytes end inside a value.
    Truncated,
    /// A type marker corecast does not read (reference, typed object, AMF3…).
    Unsupported(u8),
    /// Nesting deeper than [`MAX_DEPTH`].
    TooDeep,
    /// More than [`MAX_VALUES`] values.
    TooMany,
    /// A string that is not UTF-8.
    NotUtf8,
}

impl fmt::Display for AmfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AmfError::Truncated => f.write_str("AMF0 value truncated"),
            AmfError::Unsupported(m) => write!(f, "AMF0 type marker 0x{m:02x} not supported"),
            AmfError::TooDeep => write!(f, "AMF0 nesting deeper than {MAX_DEPTH}"),
            AmfError::TooMany => write!(f, "more than {MAX_VALUES} AMF0 values"),
            AmfError::NotUtf8 => f.write_str("AMF0 string is not UTF-8"),
        }
    }
}

impl std::error::Error for AmfError {}

/// Reads every value of `bytes` (a command: name, transaction id, then
/// arguments).
pub fn decode_all(bytes: &[u8]) -> Result<Vec<Value>, AmfError> {
    let mut r = Reader {
        bytes,
        pos: 0,
        values: 0,
    };
    let mut out = Vec::new();
    while r.pos < bytes.len() {
        out.push(r.value(0)?);
    }
    Ok(out)
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    values: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], AmfError> {
        let end = self.pos.checked_add(n).ok_or(AmfError::Truncated)?;
        let s = self.bytes.get(self.pos..end).ok_or(AmfError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, AmfError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, AmfError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, AmfError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn f64(&mut self) -> Result<f64, AmfError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(f64::from_be_bytes(a))
    }

    fn utf8(&mut self, n: usize) -> Result<String, AmfError> {
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| AmfError::NotUtf8)
    }

    fn short_string(&mut self) -> Result<String, AmfError> {
        let n = self.u16()? as usize;
        self.utf8(n)
    }

    fn value(&mut self, depth: usize) -> Result<Value, AmfError> {
        if depth > MAX_DEPTH {
            return Err(AmfError::TooDeep);
        }
        self.values += 1;
        if self.values > MAX_VALUES {
            return Err(AmfError::TooMany);
        }
        let marker = self.u8()?;
        Ok(match marker {
            NUMBER => Value::Number(self.f64()?),
            BOOLEAN => Value::Boolean(self.u8()? != 0),
            STRING => Value::String(self.short_string()?),
            LONG_STRING => {
                let n = self.u32()? as usize;
                Value::String(self.utf8(n)?)
            }
            OBJECT => Value::Object(self.properties(depth)?),
            ECMA_ARRAY => {
                // The count is a hint only; the end marker ends it.
                let _ = self.u32()?;
                Value::EcmaArray(self.properties(depth)?)
            }
            STRICT_ARRAY => {
                let n = self.u32()? as usize;
                // Each value takes at least one byte: a count beyond the
                // bytes left is a lie, not an allocation to make.
                if n > self.bytes.len() - self.pos {
                    return Err(AmfError::Truncated);
                }
                let mut items = Vec::with_capacity(n.min(MAX_VALUES));
                for _ in 0..n {
                    items.push(self.value(depth + 1)?);
                }
                Value::StrictArray(items)
            }
            NULL => Value::Null,
            UNDEFINED => Value::Undefined,
            DATE => {
                let ms = self.f64()?;
                let _zone = self.u16()?;
                Value::Date(ms)
            }
            other => return Err(AmfError::Unsupported(other)),
        })
    }

    /// Properties up to the empty key and object-end marker.
    fn properties(&mut self, depth: usize) -> Result<Vec<(String, Value)>, AmfError> {
        let mut props = Vec::new();
        loop {
            let key = self.short_string()?;
            if key.is_empty() && self.bytes.get(self.pos) == Some(&OBJECT_END) {
                self.pos += 1;
                return Ok(props);
            }
            let v = self.value(depth + 1)?;
            props.push((key, v));
        }
    }
}

/// Appends `value` to `out`.
pub fn encode(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Number(n) => {
            out.push(NUMBER);
            out.extend_from_slice(&n.to_be_bytes());
        }
        Value::Boolean(b) => {
            out.push(BOOLEAN);
            out.push(u8::from(*b));
        }
        Value::String(s) => {
            if s.len() <= u16::MAX as usize {
                out.push(STRING);
                out.extend_from_slice(&(s.len() as u16).to_be_bytes());
            } else {
                out.push(LONG_STRING);
                out.extend_from_slice(&(s.len() as u32).to_be_bytes());
            }
            out.extend_from_slice(s.as_bytes());
        }
        Value::Object(props) => {
            out.push(OBJECT);
            encode_properties(props, out);
        }
        Value::EcmaArray(props) => {
            out.push(ECMA_ARRAY);
            out.extend_from_slice(&(props.len() as u32).to_be_bytes());
            encode_properties(props, out);
        }
        Value::StrictArray(items) => {
            out.push(STRICT_ARRAY);
            out.extend_from_slice(&(items.len() as u32).to_be_bytes());
            for v in items {
                encode(v, out);
            }
        }
        Value::Null => out.push(NULL),
        Value::Undefined => out.push(UNDEFINED),
        Value::Date(ms) => {
            out.push(DATE);
            out.extend_from_slice(&ms.to_be_bytes());
            out.extend_from_slice(&0u16.to_be_bytes());
        }
    }
}

fn encode_properties(props: &[(String, Value)], out: &mut Vec<u8>) {
    for (k, v) in props {
        let k = &k.as_bytes()[..k.len().min(u16::MAX as usize)];
        out.extend_from_slice(&(k.len() as u16).to_be_bytes());
        out.extend_from_slice(k);
        encode(v, out);
    }
    out.extend_from_slice(&[0, 0, OBJECT_END]);
}

/// An object from `(key, value)` pairs.
pub fn object(props: &[(&str, Value)]) -> Value {
    Value::Object(
        props
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    )
}

/// A string value.
pub fn string(s: &str) -> Value {
    Value::String(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(v: Value) {
        let mut bytes = Vec::new();
        encode(&v, &mut bytes);
        assert_eq!(decode_all(&bytes).unwrap(), vec![v]);
    }

    #[test]
    fn every_type_round_trips() {
        round_trip(Value::Number(1.5));
        round_trip(Value::Boolean(true));
        round_trip(string("connect"));
        round_trip(Value::String("x".repeat(70_000)));
        round_trip(Value::Null);
        round_trip(Value::Undefined);
        round_trip(Value::Date(1_700_000_000_000.0));
        round_trip(object(&[
            ("app", string("live")),
            ("tcUrl", string("rtmp://h/live")),
            ("fpad", Value::Boolean(false)),
            ("audioCodecs", Value::Number(3575.0)),
            ("nested", object(&[("a", Value::Null)])),
        ]));
        round_trip(Value::EcmaArray(vec![(
            "width".into(),
            Value::Number(640.0),
        )]));
        round_trip(Value::StrictArray(vec![Value::Number(1.0), string("b")]));
    }

    #[test]
    fn a_command_reads_as_its_values() {
        let mut bytes = Vec::new();
        for v in [
            string("publish"),
            Value::Number(5.0),
            Value::Null,
            string("key"),
        ] {
            encode(&v, &mut bytes);
        }
        let vals = decode_all(&bytes).unwrap();
        assert_eq!(vals[0].as_str(), Some("publish"));
        assert_eq!(vals[1].as_number(), Some(5.0));
        assert_eq!(vals[3].as_str(), Some("key"));
    }

    #[test]
    fn nesting_bombs_and_lies_are_refused() {
        // 10 000 nested objects: refused at MAX_DEPTH, no stack overflow.
        let mut bomb = Vec::new();
        for _ in 0..10_000 {
            bomb.extend_from_slice(&[OBJECT, 0, 1, b'a']);
        }
        assert_eq!(decode_all(&bomb), Err(AmfError::TooDeep));
        let mut arrays = Vec::new();
        for _ in 0..10_000 {
            arrays.extend_from_slice(&[STRICT_ARRAY, 0, 0, 0, 1]);
        }
        assert_eq!(decode_all(&arrays), Err(AmfError::TooDeep));
        // A strict array that claims 4 billion items.
        assert_eq!(
            decode_all(&[STRICT_ARRAY, 0xff, 0xff, 0xff, 0xff, NULL]),
            Err(AmfError::Truncated)
        );
        // Many flat values.
        let many = vec![NULL; MAX_VALUES + 1];
        assert_eq!(decode_all(&many), Err(AmfError::TooMany));
        assert_eq!(decode_all(&[0x07, 0, 1]), Err(AmfError::Unsupported(0x07)));
        assert_eq!(decode_all(&[STRING, 0, 5, b'a']), Err(AmfError::Truncated));
        assert_eq!(decode_all(&[STRING, 0, 1, 0xff]), Err(AmfError::NotUtf8));
    }
}
