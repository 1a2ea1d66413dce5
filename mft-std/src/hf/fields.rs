//! Field access on a parsed JSON file (config.json, adapter_config.json) whose errors name the
//! file and the field's dotted path (`text_config.rope_parameters.full_attention.rope_type`).
//! A JSON `null` counts as absent everywhere, as transformers and PEFT treat it.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Parses JSON text, turning a syntax error into one naming the file, line and column.
pub(crate) fn parse_json(json: &str, origin: &Path) -> Result<Value> {
    serde_json::from_str(json).map_err(|source| Error::Json {
        path: origin.to_path_buf(),
        line: source.line(),
        column: source.column(),
        source,
    })
}

/// The problem of a required field that is absent or null.
pub(crate) const MISSING: &str = "missing";

/// The fields of one JSON object, with the file and the dotted path of the object for errors.
pub(crate) struct Fields<'a> {
    /// The object.
    pub(crate) map: &'a Map<String, Value>,
    /// The file it was read from.
    pub(crate) path: &'a Path,
    /// Dotted path of this object followed by a dot, or empty at the top level.
    pub(crate) prefix: String,
}

impl<'a> Fields<'a> {
    /// The top-level object of a file.
    pub(crate) fn root(value: &'a Value, path: &'a Path) -> Result<Fields<'a>> {
        match value.as_object() {
            Some(map) => Ok(Fields { map, path, prefix: String::new() }),
            None => Err(Error::Config {
                path: path.to_path_buf(),
                field: "(top level)".into(),
                problem: "expected a JSON object".into(),
            }),
        }
    }

    /// An [`Error::Config`] for `field` of this object.
    pub(crate) fn error(&self, field: &str, problem: impl Into<String>) -> Error {
        Error::Config {
            path: PathBuf::from(self.path),
            field: format!("{}{field}", self.prefix),
            problem: problem.into(),
        }
    }

    /// The value of `field`; a JSON null counts as absent.
    pub(crate) fn get(&self, field: &str) -> Option<&'a Value> {
        self.map.get(field).filter(|v| !v.is_null())
    }

    /// The error of a field whose value has the wrong type, showing (the start of) the value.
    pub(crate) fn expected(&self, field: &str, what: &str, value: &Value) -> Error {
        let mut shown = value.to_string();
        if shown.len() > 60 {
            shown.truncate(shown.floor_char_boundary(57));
            shown.push_str("...");
        }
        self.error(field, format!("expected {what}, found {shown}"))
    }

    /// An optional non-negative integer.
    pub(crate) fn usize_or_none(&self, field: &str) -> Result<Option<usize>> {
        let Some(value) = self.get(field) else { return Ok(None) };
        match value.as_u64().and_then(|v| usize::try_from(v).ok()) {
            Some(v) => Ok(Some(v)),
            None => Err(self.expected(field, "a non-negative integer", value)),
        }
    }

    /// A required non-negative integer.
    pub(crate) fn usize(&self, field: &str) -> Result<usize> {
        self.usize_or_none(field)?.ok_or_else(|| self.error(field, MISSING))
    }

    /// A non-negative integer, `default` when absent.
    pub(crate) fn usize_or(&self, field: &str, default: usize) -> Result<usize> {
        Ok(self.usize_or_none(field)?.unwrap_or(default))
    }

    /// A required number.
    pub(crate) fn f64(&self, field: &str) -> Result<f64> {
        let value = self.get(field).ok_or_else(|| self.error(field, MISSING))?;
        value.as_f64().ok_or_else(|| self.expected(field, "a number", value))
    }

    /// A required number that fits f32.
    pub(crate) fn f32(&self, field: &str) -> Result<f32> {
        let value = self.f64(field)? as f32;
        if !value.is_finite() {
            return Err(self.error(field, "out of the range of f32"));
        }
        Ok(value)
    }

    /// A number that fits f32, `default` when absent.
    pub(crate) fn f32_or(&self, field: &str, default: f32) -> Result<f32> {
        match self.get(field) {
            Some(_) => self.f32(field),
            None => Ok(default),
        }
    }

    /// A boolean, `default` when absent.
    pub(crate) fn bool_or(&self, field: &str, default: bool) -> Result<bool> {
        match self.get(field) {
            Some(value) => {
                value.as_bool().ok_or_else(|| self.expected(field, "true or false", value))
            }
            None => Ok(default),
        }
    }

    /// A string, `default` when absent.
    pub(crate) fn str_or(&self, field: &str, default: Option<&'a str>) -> Result<Option<&'a str>> {
        match self.get(field) {
            Some(value) => {
                value.as_str().map(Some).ok_or_else(|| self.expected(field, "a string", value))
            }
            None => Ok(default),
        }
    }

    /// A required string.
    pub(crate) fn str(&self, field: &str) -> Result<&'a str> {
        self.str_or(field, None)?.ok_or_else(|| self.error(field, MISSING))
    }

    /// The nested object `field`, if present and not null.
    pub(crate) fn object(&self, field: &str) -> Result<Option<Fields<'a>>> {
        let Some(value) = self.get(field) else { return Ok(None) };
        let map = value.as_object().ok_or_else(|| self.expected(field, "an object", value))?;
        Ok(Some(Fields { map, path: self.path, prefix: format!("{}{field}.", self.prefix) }))
    }

    /// Checks that the string option `field` (default `default`) is one of `allowed`.
    pub(crate) fn one_of(&self, field: &str, default: &str, allowed: &[&str]) -> Result<()> {
        let value = self.str_or(field, Some(default))?.unwrap_or(default);
        if allowed.contains(&value) {
            return Ok(());
        }
        Err(self.error(
            field,
            format!("\"{value}\" is not supported (supported: {})", allowed.join(", ")),
        ))
    }

    /// Refuses the boolean option `field` when it is true.
    pub(crate) fn refuse_true(&self, field: &str) -> Result<()> {
        if self.bool_or(field, false)? {
            return Err(self.error(field, "true is not supported by mft"));
        }
        Ok(())
    }
}
