//! The Orthanc plugin SDK boundary: every `unsafe` line of the project.
//!
//! The declarations are written by hand from `orthanc/OrthancCPlugin.h`
//! (Orthanc 1.10.1 SDK, see docs/adr/0001-orthanc-bindings.md) and checked
//! against the real header by the `layout` test, which compiles a C program
//! printing the header's sizes, offsets and service numbers.
//!
//! Rules kept here: every callback Orthanc calls is wrapped in
//! `catch_unwind` (a panic never crosses into C++); every pointer from Orthanc
//! is read only during the call that gave it; the rest of the crate sees only
//! safe functions.

#![allow(non_camel_case_types, non_snake_case)]

use std::ffi::{c_char, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

type OrthancPluginErrorCode = i32;
const ERROR_SUCCESS: OrthancPluginErrorCode = 0;

/// `OrthancPluginContext` (OrthancCPlugin.h).
#[repr(C)]
pub struct OrthancPluginContext {
    plugins_manager: *mut c_void,
    orthanc_version: *const c_char,
    free: Option<unsafe extern "C" fn(*mut c_void)>,
    invoke_service: Option<
        unsafe extern "C" fn(
            *mut OrthancPluginContext,
            i32,
            *const c_void,
        ) -> OrthancPluginErrorCode,
    >,
}

// `_OrthancPluginService` values used by this plugin.
const SERVICE_LOG_INFO: i32 = 1;
const SERVICE_LOG_WARNING: i32 = 2;
const SERVICE_LOG_ERROR: i32 = 3;
const SERVICE_GET_CONFIGURATION_PATH: i32 = 6;
const SERVICE_SET_PLUGIN_PROPERTY: i32 = 7;
const SERVICE_GET_CONFIGURATION: i32 = 13;

// `_OrthancPluginProperty` values.
const PROPERTY_DESCRIPTION: i32 = 1;

/// `_OrthancPluginSetPluginProperty`.
#[repr(C)]
struct SetPluginPropertyParams {
    plugin: *const c_char,
    property: i32,
    value: *const c_char,
}

/// `_OrthancPluginRetrieveDynamicString`.
#[repr(C)]
struct RetrieveDynamicStringParams {
    result: *mut *mut c_char,
    argument: *const c_char,
}

const PLUGIN_NAME_C: &CStr = c"dicomweb-oauth";
const PLUGIN_VERSION_C: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");

/// The context Orthanc gave at initialization; null before and after.
static CONTEXT: AtomicPtr<OrthancPluginContext> = AtomicPtr::new(ptr::null_mut());

fn invoke(service: i32, params: *const c_void) -> Result<(), OrthancPluginErrorCode> {
    let context = CONTEXT.load(Ordering::Acquire);
    if context.is_null() {
        return Err(-1);
    }
    // SAFETY: `context` is the pointer Orthanc passed to OrthancPluginInitialize,
    // valid until OrthancPluginFinalize clears CONTEXT; `params` points at the
    // parameter struct the service expects, alive for the duration of the call.
    let code = unsafe {
        match (*context).invoke_service {
            Some(f) => f(context, service, params),
            None => -1,
        }
    };
    if code == ERROR_SUCCESS {
        Ok(())
    } else {
        Err(code)
    }
}

/// Orthanc's log severities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogSeverity {
    Info,
    Warning,
    Error,
}

/// Writes one line to Orthanc's log (stderr when Orthanc is not there, as in unit tests).
pub fn log(severity: LogSeverity, message: &str) {
    let text = CString::new(message.replace('\0', "\\0")).expect("NULs were replaced");
    let service = match severity {
        LogSeverity::Info => SERVICE_LOG_INFO,
        LogSeverity::Warning => SERVICE_LOG_WARNING,
        LogSeverity::Error => SERVICE_LOG_ERROR,
    };
    if invoke(service, text.as_ptr().cast()).is_err() {
        eprintln!("{message}");
    }
}

/// Sets the description shown on Orthanc Explorer's plugin page.
pub fn set_description(description: &str) {
    let Ok(value) = CString::new(description) else {
        return;
    };
    let params = SetPluginPropertyParams {
        plugin: PLUGIN_NAME_C.as_ptr(),
        property: PROPERTY_DESCRIPTION,
        value: value.as_ptr(),
    };
    let _ = invoke(SERVICE_SET_PLUGIN_PROPERTY, ptr::from_ref(&params).cast());
}

/// Orthanc's whole configuration as JSON text.
pub fn configuration() -> Option<String> {
    dynamic_string(SERVICE_GET_CONFIGURATION)
}

/// The configuration file or folder Orthanc was started with.
pub fn configuration_path() -> Option<String> {
    dynamic_string(SERVICE_GET_CONFIGURATION_PATH)
}

/// Calls a service that answers with a string Orthanc allocates.
fn dynamic_string(service: i32) -> Option<String> {
    let mut result: *mut c_char = ptr::null_mut();
    let params = RetrieveDynamicStringParams {
        result: &mut result,
        argument: ptr::null(),
    };
    invoke(service, ptr::from_ref(&params).cast()).ok()?;
    if result.is_null() {
        return None;
    }
    // SAFETY: on success Orthanc stored a NUL-terminated string it allocated;
    // it is copied, then released with the context's Free, exactly once.
    unsafe {
        let text = CStr::from_ptr(result).to_string_lossy().into_owned();
        free_orthanc_memory(result.cast());
        Some(text)
    }
}

/// Releases memory Orthanc allocated for the plugin.
///
/// # Safety
/// `p` must come from Orthanc and not have been freed.
unsafe fn free_orthanc_memory(p: *mut c_void) {
    let context = CONTEXT.load(Ordering::Acquire);
    if !context.is_null() {
        // SAFETY: the context is valid while CONTEXT holds it; the caller
        // guarantees `p` is Orthanc memory not yet freed.
        unsafe {
            if let Some(free) = (*context).free {
                free(p);
            }
        }
    }
}

/// Runs `f`, turning a panic into `None` and a log line instead of an abort.
pub fn guard<T>(what: &str, f: impl FnOnce() -> T) -> Option<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(value) => Some(value),
        Err(panic) => {
            let detail = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic".into());
            log(
                LogSeverity::Error,
                &format!(
                    "[INT-001] {what}: internal error caught at the plugin boundary: {detail}"
                ),
            );
            None
        }
    }
}

// ---------------------------------------------------------------------------
// The four entry points Orthanc looks up in the shared library.
// ---------------------------------------------------------------------------

/// Called by Orthanc once, when loading the plugin. Non-zero refuses the load
/// (Orthanc then stops with an error).
#[no_mangle]
pub extern "C" fn OrthancPluginInitialize(context: *mut OrthancPluginContext) -> i32 {
    if context.is_null() {
        return -1;
    }
    CONTEXT.store(context, Ordering::Release);
    // SAFETY: Orthanc passes a valid context whose version string lives as long as the plugin.
    let version = unsafe {
        let v = (*context).orthanc_version;
        if v.is_null() {
            String::new()
        } else {
            CStr::from_ptr(v).to_string_lossy().into_owned()
        }
    };
    match guard("initialization", || crate::plugin::initialize(&version)) {
        Some(Ok(())) => 0,
        Some(Err(())) | None => -1,
    }
}

/// Called by Orthanc once, when unloading the plugin.
#[no_mangle]
pub extern "C" fn OrthancPluginFinalize() {
    guard("finalization", crate::plugin::finalize);
    CONTEXT.store(ptr::null_mut(), Ordering::Release);
}

#[no_mangle]
pub extern "C" fn OrthancPluginGetName() -> *const c_char {
    PLUGIN_NAME_C.as_ptr()
}

#[no_mangle]
pub extern "C" fn OrthancPluginGetVersion() -> *const c_char {
    PLUGIN_VERSION_C.as_ptr().cast()
}

#[cfg(test)]
mod layout {
    //! Checks the hand-written declarations against the installed SDK header.
    use super::*;
    use std::mem::{offset_of, size_of};
    use std::process::Command;

    const HEADER: &str = "/usr/include/orthanc/OrthancCPlugin.h";

    /// (C expression printed with %zu/%ld, value on the Rust side).
    fn checks() -> Vec<(&'static str, i64)> {
        vec![
            (
                "sizeof(OrthancPluginContext)",
                size_of::<OrthancPluginContext>() as i64,
            ),
            (
                "offsetof(OrthancPluginContext, orthancVersion)",
                offset_of!(OrthancPluginContext, orthanc_version) as i64,
            ),
            (
                "offsetof(OrthancPluginContext, Free)",
                offset_of!(OrthancPluginContext, free) as i64,
            ),
            (
                "offsetof(OrthancPluginContext, InvokeService)",
                offset_of!(OrthancPluginContext, invoke_service) as i64,
            ),
            (
                "sizeof(_OrthancPluginSetPluginProperty)",
                size_of::<SetPluginPropertyParams>() as i64,
            ),
            (
                "offsetof(_OrthancPluginSetPluginProperty, value)",
                offset_of!(SetPluginPropertyParams, value) as i64,
            ),
            (
                "sizeof(_OrthancPluginRetrieveDynamicString)",
                size_of::<RetrieveDynamicStringParams>() as i64,
            ),
            (
                "offsetof(_OrthancPluginRetrieveDynamicString, argument)",
                offset_of!(RetrieveDynamicStringParams, argument) as i64,
            ),
            (
                "sizeof(OrthancPluginErrorCode)",
                size_of::<OrthancPluginErrorCode>() as i64,
            ),
            ("OrthancPluginErrorCode_Success", ERROR_SUCCESS as i64),
            ("_OrthancPluginService_LogInfo", SERVICE_LOG_INFO as i64),
            (
                "_OrthancPluginService_LogWarning",
                SERVICE_LOG_WARNING as i64,
            ),
            ("_OrthancPluginService_LogError", SERVICE_LOG_ERROR as i64),
            (
                "_OrthancPluginService_SetPluginProperty",
                SERVICE_SET_PLUGIN_PROPERTY as i64,
            ),
            (
                "_OrthancPluginService_GetConfiguration",
                SERVICE_GET_CONFIGURATION as i64,
            ),
            (
                "_OrthancPluginService_GetConfigurationPath",
                SERVICE_GET_CONFIGURATION_PATH as i64,
            ),
            (
                "_OrthancPluginProperty_Description",
                PROPERTY_DESCRIPTION as i64,
            ),
        ]
    }

    #[test]
    fn declarations_match_the_sdk_header() {
        assert!(
            std::path::Path::new(HEADER).exists(),
            "{HEADER} not found: install the Debian package orthanc-dev (scripts/test does)"
        );
        let dir = std::env::temp_dir().join(format!("ffi-layout-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut c = String::from(
            "#include <stdio.h>\n#include <stddef.h>\n#include <orthanc/OrthancCPlugin.h>\nint main(void) {\n",
        );
        for (expr, _) in checks() {
            c.push_str(&format!("  printf(\"%ld\\n\", (long) ({expr}));\n"));
        }
        c.push_str("  return 0;\n}\n");
        let src = dir.join("layout.c");
        let bin = dir.join("layout");
        std::fs::write(&src, c).unwrap();
        let status = Command::new("cc")
            .arg(&src)
            .arg("-o")
            .arg(&bin)
            .status()
            .unwrap();
        assert!(status.success(), "compiling the layout probe failed");
        let out = Command::new(&bin).output().unwrap();
        let printed: Vec<i64> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
        let _ = std::fs::remove_dir_all(&dir);
        for ((expr, rust), c) in checks().into_iter().zip(printed) {
            assert_eq!(
                rust, c,
                "{expr}: Rust declares {rust}, the SDK header says {c}"
            );
        }
    }
}
