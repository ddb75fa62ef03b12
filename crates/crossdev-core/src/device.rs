//! TensorFlow device strings: parsing, canonical form and resolution (SPEC §4).
//!
//! The canonical form `/job:J/replica:R/task:T/device:TYPE:I` keys every per-device map, so two
//! spellings of one device (`/gpu:1`, `GPU:1`, `/device:GPU:1`) always meet.

use crate::error::{fail, ErrorCode, Result};
use std::cell::RefCell;
use crate::memo::Memo;
use std::fmt;

/// A partially specified device: every field may be unset, as in TensorFlow's `DeviceSpec`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceSpec {
    /// Job name (`localhost`, `worker`, …).
    pub job: Option<String>,
    /// Replica number.
    pub replica: Option<i64>,
    /// Task number.
    pub task: Option<i64>,
    /// Device type (`CPU`, `GPU`, or anything written as `/device:TYPE:n`).
    pub device_type: Option<String>,
    /// Device index; unset means `*`.
    pub device_index: Option<i64>,
}

fn parse_int(text: &str) -> Result<i64> {
    text.parse::<i64>().or_else(|_| {
        fail(ErrorCode::InvalidDevice, format!("invalid literal for int() with base 10: '{text}'"))
    })
}

impl DeviceSpec {
    /// Parses a device string (`DeviceSpec.from_string`): `/`-separated parts of `:`-separated
    /// fields; empty parts are ignored.
    pub fn parse(spec: &str) -> Result<DeviceSpec> {
        let mut d = DeviceSpec::default();
        for part in spec.split('/') {
            let y: Vec<&str> = part.split(':').collect();
            let ly = y.len();
            let short_type = y[0].eq_ignore_ascii_case("gpu") || y[0].eq_ignore_ascii_case("cpu");
            if ly == 2 && y[0] == "job" {
                d.job = Some(y[1].to_string());
            } else if ly == 2 && y[0] == "replica" {
                d.replica = Some(parse_int(y[1])?);
            } else if ly == 2 && y[0] == "task" {
                d.task = Some(parse_int(y[1])?);
            } else if (ly == 1 || ly == 2) && short_type {
                d.set_type(spec, y[0].to_ascii_uppercase(), if ly == 2 { Some(y[1]) } else { None })?;
            } else if ly == 3 && y[0] == "device" {
                d.set_type(spec, y[1].to_string(), Some(y[2]))?;
            } else if !y[0].is_empty() {
                return fail(
                    ErrorCode::InvalidDevice,
                    format!("Unknown attribute: '{}' in '{spec}'", y[0]),
                );
            }
        }
        Ok(d)
    }

    fn set_type(&mut self, spec: &str, device_type: String, index: Option<&str>) -> Result<()> {
        if self.device_type.is_some() {
            return fail(
                ErrorCode::InvalidDevice,
                format!("Cannot specify multiple device types: {spec}"),
            );
        }
        self.device_type = Some(device_type);
        if let Some(i) = index.filter(|i| *i != "*") {
            self.device_index = Some(parse_int(i)?);
        }
        Ok(())
    }

    /// Copies every field that `other` sets (`DeviceSpec.merge_from`).
    pub fn merge_from(&mut self, other: &DeviceSpec) {
        if other.job.is_some() {
            self.job = other.job.clone();
        }
        if other.replica.is_some() {
            self.replica = other.replica;
        }
        if other.task.is_some() {
            self.task = other.task;
        }
        if other.device_type.is_some() {
            self.device_type = other.device_type.clone();
        }
        if other.device_index.is_some() {
            self.device_index = other.device_index;
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(job) = &self.job {
            write!(f, "/job:{job}")?;
        }
        if let Some(r) = self.replica {
            write!(f, "/replica:{r}")?;
        }
        if let Some(t) = self.task {
            write!(f, "/task:{t}")?;
        }
        if let Some(ty) = &self.device_type {
            match self.device_index {
                Some(i) => write!(f, "/device:{ty}:{i}")?,
                None => write!(f, "/device:{ty}:*")?,
            }
        }
        Ok(())
    }
}

/// The most device strings [`canonicalize`] remembers per thread; past that it starts over.
const REMEMBERED: usize = 1024;

thread_local! {
    /// Canonical forms of the devices canonicalised without a default, on this thread.
    static CANONICAL: RefCell<Memo<String>> = RefCell::new(Memo::new(REMEMBERED));
}

/// The fully specified form of `device`, completing unset fields from `default` and then from
/// `/job:localhost/replica:0/task:0/device:CPU:0` (`device_util.canonicalize`).
///
/// Every request canonicalises the devices of its values and results, usually the same few: the
/// forms of devices canonicalised without a default are remembered (the result depends on
/// `device` alone; errors are not remembered).
pub fn canonicalize(device: &str, default: Option<&str>) -> Result<String> {
    if default.is_some_and(|d| !d.is_empty()) {
        return canonicalize_uncached(device, default);
    }
    if let Some(known) = CANONICAL.with(|c| c.borrow().get(device)) {
        return Ok(known);
    }
    let canonical = canonicalize_uncached(device, None)?;
    CANONICAL.with(|c| c.borrow_mut().insert(device, canonical.clone(), 1));
    Ok(canonical)
}

fn canonicalize_uncached(device: &str, default: Option<&str>) -> Result<String> {
    let d = DeviceSpec::parse(device)?;
    if let Some(ty) = &d.device_type {
        if *ty != ty.to_uppercase() {
            return fail(ErrorCode::InvalidDevice, format!("Device type '{ty}' must be all-caps."));
        }
    }
    let mut result = DeviceSpec {
        job: Some("localhost".into()),
        replica: Some(0),
        task: Some(0),
        device_type: Some("CPU".into()),
        device_index: Some(0),
    };
    if let Some(default) = default.filter(|s| !s.is_empty()) {
        result.merge_from(&DeviceSpec::parse(default)?);
    }
    result.merge_from(&d);
    Ok(result.to_string())
}

/// `canonicalize(device, current)`: `current` is the device of the enclosing device scope, if
/// any (`device_util.resolve`). crossdev has no implicit scopes, so callers pass it explicitly.
pub fn resolve(device: &str, current: Option<&str>) -> Result<String> {
    canonicalize(device, current)
}
