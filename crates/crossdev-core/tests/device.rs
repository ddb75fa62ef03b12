//! SPEC §4 (DeviceSpec parsing, canonicalize, resolve) and §6.5 (device_util_test).

mod common;

use common::err;
use crossdev_core::{canonicalize, resolve, DeviceSpec, ErrorCode};

const LOCAL: &str = "/job:localhost/replica:0/task:0";

fn spec(job: Option<&str>, replica: Option<i64>, task: Option<i64>, ty: Option<&str>, idx: Option<i64>) -> DeviceSpec {
    DeviceSpec {
        job: job.map(String::from),
        replica,
        task,
        device_type: ty.map(String::from),
        device_index: idx,
    }
}

// ---- §4.1 parsing -------------------------------------------------------------------------

#[test]
fn parse_full_spec_keeps_long_form_type_as_written() {
    let d = DeviceSpec::parse("/job:worker/replica:1/task:2/device:XLA_GPU:3").unwrap();
    assert_eq!(d, spec(Some("worker"), Some(1), Some(2), Some("XLA_GPU"), Some(3)));
    assert_eq!(d.to_string(), "/job:worker/replica:1/task:2/device:XLA_GPU:3");
}

#[test]
fn parse_short_forms_upper_case_cpu_and_gpu() {
    assert_eq!(DeviceSpec::parse("/gpu:1").unwrap(), spec(None, None, None, Some("GPU"), Some(1)));
    assert_eq!(DeviceSpec::parse("GPU:1").unwrap(), spec(None, None, None, Some("GPU"), Some(1)));
    assert_eq!(DeviceSpec::parse("/Cpu:0").unwrap(), spec(None, None, None, Some("CPU"), Some(0)));
    assert_eq!(DeviceSpec::parse("/gPu").unwrap(), spec(None, None, None, Some("GPU"), None));
    assert_eq!(DeviceSpec::parse("cpu:*").unwrap(), spec(None, None, None, Some("CPU"), None));
    // The long form does not upper-case.
    assert_eq!(DeviceSpec::parse("/device:gpu:0").unwrap(), spec(None, None, None, Some("gpu"), Some(0)));
    assert_eq!(DeviceSpec::parse("/device:TPU:*").unwrap(), spec(None, None, None, Some("TPU"), None));
}

#[test]
fn parse_ignores_empty_parts() {
    assert_eq!(DeviceSpec::parse("").unwrap(), DeviceSpec::default());
    assert_eq!(DeviceSpec::parse("/").unwrap(), DeviceSpec::default());
    assert_eq!(
        DeviceSpec::parse("//job:a///task:3/").unwrap(),
        spec(Some("a"), None, Some(3), None, None)
    );
}

#[test]
fn to_string_writes_only_set_fields_and_star_for_unset_index() {
    assert_eq!(DeviceSpec::default().to_string(), "");
    assert_eq!(DeviceSpec::parse("/gpu").unwrap().to_string(), "/device:GPU:*");
    assert_eq!(DeviceSpec::parse("/cpu:2").unwrap().to_string(), "/device:CPU:2");
    assert_eq!(DeviceSpec::parse("/task:1/job:w").unwrap().to_string(), "/job:w/task:1");
    assert_eq!(DeviceSpec::parse("/replica:4").unwrap().to_string(), "/replica:4");
}

#[test]
fn parse_unknown_attribute() {
    assert_eq!(
        err(DeviceSpec::parse("TPU:0")),
        (ErrorCode::InvalidDevice, "Unknown attribute: 'TPU' in 'TPU:0'".to_string())
    );
    assert_eq!(
        err(DeviceSpec::parse("/job:foo/bar:1")),
        (ErrorCode::InvalidDevice, "Unknown attribute: 'bar' in '/job:foo/bar:1'".to_string())
    );
    // `device:TYPE` without an index is not the long form.
    assert_eq!(
        err(DeviceSpec::parse("/device:GPU")),
        (ErrorCode::InvalidDevice, "Unknown attribute: 'device' in '/device:GPU'".to_string())
    );
    assert_eq!(
        err(canonicalize("/job:worker/xpu:0", None)),
        (ErrorCode::InvalidDevice, "Unknown attribute: 'xpu' in '/job:worker/xpu:0'".to_string())
    );
}

#[test]
fn parse_multiple_device_types() {
    assert_eq!(
        err(DeviceSpec::parse("/cpu:0/gpu:1")),
        (ErrorCode::InvalidDevice, "Cannot specify multiple device types: /cpu:0/gpu:1".to_string())
    );
    assert_eq!(
        err(DeviceSpec::parse("/device:CPU:0/device:GPU:0")),
        (
            ErrorCode::InvalidDevice,
            "Cannot specify multiple device types: /device:CPU:0/device:GPU:0".to_string()
        )
    );
    assert_eq!(
        err(canonicalize("/job:w/gpu/device:TPU:0", None)),
        (ErrorCode::InvalidDevice, "Cannot specify multiple device types: /job:w/gpu/device:TPU:0".to_string())
    );
}

#[test]
fn parse_bad_integers() {
    assert_eq!(
        err(DeviceSpec::parse("/replica:x")),
        (ErrorCode::InvalidDevice, "invalid literal for int() with base 10: 'x'".to_string())
    );
    assert_eq!(
        err(DeviceSpec::parse("/gpu:one")),
        (ErrorCode::InvalidDevice, "invalid literal for int() with base 10: 'one'".to_string())
    );
}

// ---- §4.2 canonicalize ------------------------------------------------------------------

#[test]
fn canonicalize_without_default() {
    let cases = [
        ("/gpu:0", format!("{LOCAL}/device:GPU:0")),
        ("GPU:1", format!("{LOCAL}/device:GPU:1")),
        ("/cpu:0", format!("{LOCAL}/device:CPU:0")),
        ("/job:worker/task:1", "/job:worker/replica:0/task:1/device:CPU:0".to_string()),
        ("", format!("{LOCAL}/device:CPU:0")),
        ("/job:worker/cpu:0", "/job:worker/replica:0/task:0/device:CPU:0".to_string()),
        ("/device:CPU:0", format!("{LOCAL}/device:CPU:0")),
        ("/device:XLA_GPU:2", format!("{LOCAL}/device:XLA_GPU:2")),
        ("/gpu", format!("{LOCAL}/device:GPU:0")),
    ];
    for (d, want) in cases {
        assert_eq!(canonicalize(d, None).unwrap(), want, "canonicalize({d:?})");
        // An empty default is the same as none.
        assert_eq!(canonicalize(d, Some("")).unwrap(), want, "canonicalize({d:?}, \"\")");
        // Canonical forms are fixed points.
        assert_eq!(canonicalize(&want, None).unwrap(), want);
    }
}

#[test]
fn canonicalize_with_default() {
    assert_eq!(
        canonicalize("/job:worker/task:1/cpu:0", Some("/gpu:0")).unwrap(),
        "/job:worker/replica:0/task:1/device:CPU:0"
    );
    assert_eq!(
        canonicalize("/job:worker/task:1", Some("/gpu:0")).unwrap(),
        "/job:worker/replica:0/task:1/device:GPU:0"
    );
    assert_eq!(canonicalize("/cpu:0", Some("/job:worker")).unwrap(), "/job:worker/replica:0/task:0/device:CPU:0");
}

#[test]
fn canonicalize_index_merges_independently_of_type() {
    assert_eq!(canonicalize("/gpu", Some("/cpu:3")).unwrap(), format!("{LOCAL}/device:GPU:3"));
    assert_eq!(canonicalize("/device:GPU:*", Some("/cpu:3")).unwrap(), format!("{LOCAL}/device:GPU:3"));
}

#[test]
fn canonicalize_rejects_lower_case_long_form_type() {
    assert_eq!(
        err(canonicalize("/device:gpu:0", None)),
        (ErrorCode::InvalidDevice, "Device type 'gpu' must be all-caps.".to_string())
    );
    assert_eq!(
        err(canonicalize("/job:w/device:Tpu:1", Some("/cpu:0"))),
        (ErrorCode::InvalidDevice, "Device type 'Tpu' must be all-caps.".to_string())
    );
    // Only `d` is checked, as in TensorFlow; a default's type is merged as written.
    assert_eq!(canonicalize("/cpu:1", Some("/device:gpu:0")).unwrap(), format!("{LOCAL}/device:CPU:1"));
}

#[test]
fn canonicalize_reports_errors_of_the_default() {
    assert_eq!(
        err(canonicalize("/cpu:0", Some("/bogus:1"))),
        (ErrorCode::InvalidDevice, "Unknown attribute: 'bogus' in '/bogus:1'".to_string())
    );
}

// ---- §4.3 resolve (the device scope is the `current` argument) --------------------------

#[test]
fn resolve_under_gpu_scope() {
    // Under `with device("/gpu:0")`, current() is "/device:GPU:0".
    let current = Some("/device:GPU:0");
    assert_eq!(
        resolve("/job:worker/task:1/cpu:0", current).unwrap(),
        "/job:worker/replica:0/task:1/device:CPU:0"
    );
    assert_eq!(resolve("/job:worker/task:1", current).unwrap(), "/job:worker/replica:0/task:1/device:GPU:0");
    assert_eq!(resolve("", current).unwrap(), format!("{LOCAL}/device:GPU:0"));
}

#[test]
fn resolve_under_job_scope() {
    assert_eq!(resolve("/cpu:0", Some("/job:worker")).unwrap(), "/job:worker/replica:0/task:0/device:CPU:0");
    // Nested `/job:worker` + `/cpu:0` scopes: current() is "/job:worker/device:CPU:0".
    assert_eq!(
        resolve("/task:2", Some("/job:worker/device:CPU:0")).unwrap(),
        "/job:worker/replica:0/task:2/device:CPU:0"
    );
    assert_eq!(resolve("/gpu:1", Some("/job:worker/device:CPU:0")).unwrap(), "/job:worker/replica:0/task:0/device:GPU:1");
}

#[test]
fn resolve_without_scope_is_canonicalize() {
    for d in ["/gpu:0", "GPU:1", "/cpu:0", "/job:worker/task:1", "", "/job:worker/cpu:0"] {
        assert_eq!(resolve(d, None).unwrap(), canonicalize(d, None).unwrap());
        assert_eq!(resolve(d, Some("")).unwrap(), canonicalize(d, None).unwrap());
    }
    // Eager under "/cpu:0": current() is already canonical.
    assert_eq!(resolve("", Some("/job:localhost/replica:0/task:0/device:CPU:0")).unwrap(), format!("{LOCAL}/device:CPU:0"));
}

#[test]
fn resolve_errors() {
    assert_eq!(
        err(resolve("/device:gpu:0", Some("/gpu:0"))),
        (ErrorCode::InvalidDevice, "Device type 'gpu' must be all-caps.".to_string())
    );
    assert_eq!(
        err(resolve("/cpu:0/gpu:0", None)),
        (ErrorCode::InvalidDevice, "Cannot specify multiple device types: /cpu:0/gpu:0".to_string())
    );
}

#[test]
fn merge_from_copies_only_set_fields() {
    let mut a = DeviceSpec::parse("/job:a/replica:1/task:2/cpu:3").unwrap();
    a.merge_from(&DeviceSpec::parse("/task:7/gpu").unwrap());
    assert_eq!(a, spec(Some("a"), Some(1), Some(7), Some("GPU"), Some(3)));
    a.merge_from(&DeviceSpec::default());
    assert_eq!(a.to_string(), "/job:a/replica:1/task:7/device:GPU:3");
}

#[test]
fn error_display_has_code_and_message() {
    let e = canonicalize("/device:gpu:0", None).unwrap_err();
    assert_eq!(e.to_string(), "ERR_INVALID_DEVICE: Device type 'gpu' must be all-caps.");
    assert_eq!(e.code.as_str(), "ERR_INVALID_DEVICE");
}
