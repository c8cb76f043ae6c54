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

use crate::http::Bytes;
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

const SERVICE_REGISTER_ON_CHANGE_CALLBACK: i32 = 1003;
const SERVICE_REGISTER_REST_CALLBACK_NO_LOCK: i32 = 1004;
const SERVICE_REST_API_PUT_AFTER_PLUGINS: i32 = 3013;
const SERVICE_REGISTER_INCOMING_HTTP_REQUEST_FILTER2: i32 = 1010;
const SERVICE_REGISTER_CHUNKED_REST_CALLBACK: i32 = 1012;
const SERVICE_ANSWER_BUFFER: i32 = 2000;
const SERVICE_SEND_METHOD_NOT_ALLOWED: i32 = 2005;
const SERVICE_SET_HTTP_HEADER: i32 = 2007;
const SERVICE_SEND_HTTP_STATUS: i32 = 2010;

// `OrthancPluginHttpMethod` values.
const HTTP_METHOD_GET: i32 = 1;
const HTTP_METHOD_POST: i32 = 2;
const HTTP_METHOD_PUT: i32 = 3;
const HTTP_METHOD_DELETE: i32 = 4;

// `OrthancPluginChangeType` values.
const CHANGE_ORTHANC_STARTED: i32 = 10;

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

/// Opaque `OrthancPluginRestOutput`.
#[repr(C)]
pub struct OrthancPluginRestOutput {
    _private: [u8; 0],
}

/// Opaque `OrthancPluginServerChunkedRequestReader` (our [`ChunkedReader`] behind the pointer).
#[repr(C)]
pub struct OrthancPluginServerChunkedRequestReader {
    _private: [u8; 0],
}

/// `OrthancPluginHttpRequest`.
#[repr(C)]
pub struct OrthancPluginHttpRequest {
    method: i32,
    groups_count: u32,
    groups: *const *const c_char,
    get_count: u32,
    get_keys: *const *const c_char,
    get_values: *const *const c_char,
    body: *const c_void,
    body_size: u32,
    headers_count: u32,
    headers_keys: *const *const c_char,
    headers_values: *const *const c_char,
}

type RestCallback = unsafe extern "C" fn(
    *mut OrthancPluginRestOutput,
    *const c_char,
    *const OrthancPluginHttpRequest,
) -> OrthancPluginErrorCode;

type ReaderFactory = unsafe extern "C" fn(
    *mut *mut OrthancPluginServerChunkedRequestReader,
    *const c_char,
    *const OrthancPluginHttpRequest,
) -> OrthancPluginErrorCode;

/// `_OrthancPluginRestCallback`.
#[repr(C)]
struct RestCallbackParams {
    path_regular_expression: *const c_char,
    callback: RestCallback,
}

/// `_OrthancPluginChunkedRestCallback`.
#[repr(C)]
struct ChunkedRestCallbackParams {
    path_regular_expression: *const c_char,
    get_handler: Option<RestCallback>,
    post_handler: Option<ReaderFactory>,
    delete_handler: Option<RestCallback>,
    put_handler: Option<ReaderFactory>,
    add_chunk: unsafe extern "C" fn(
        *mut OrthancPluginServerChunkedRequestReader,
        *const c_void,
        u32,
    ) -> OrthancPluginErrorCode,
    execute: unsafe extern "C" fn(
        *mut OrthancPluginServerChunkedRequestReader,
        *mut OrthancPluginRestOutput,
    ) -> OrthancPluginErrorCode,
    finalize: unsafe extern "C" fn(*mut OrthancPluginServerChunkedRequestReader),
}

type IncomingFilter = unsafe extern "C" fn(
    i32,
    *const c_char,
    *const c_char,
    u32,
    *const *const c_char,
    *const *const c_char,
    u32,
    *const *const c_char,
    *const *const c_char,
) -> i32;

/// `_OrthancPluginIncomingHttpRequestFilter2`.
#[repr(C)]
struct IncomingFilterParams {
    callback: IncomingFilter,
}

/// `_OrthancPluginAnswerBuffer`.
#[repr(C)]
struct AnswerBufferParams {
    output: *mut OrthancPluginRestOutput,
    answer: *const c_void,
    answer_size: u32,
    mime_type: *const c_char,
}

/// `_OrthancPluginSetHttpHeader`.
#[repr(C)]
struct SetHttpHeaderParams {
    output: *mut OrthancPluginRestOutput,
    key: *const c_char,
    value: *const c_char,
}

/// `OrthancPluginMemoryBuffer`.
#[repr(C)]
struct MemoryBuffer {
    data: *mut c_void,
    size: u32,
}

/// `_OrthancPluginRestApiPostPut`.
#[repr(C)]
struct RestApiPostPutParams {
    target: *mut MemoryBuffer,
    uri: *const c_char,
    body: *const c_void,
    body_size: u32,
}

type OnChangeCallback = unsafe extern "C" fn(i32, i32, *const c_char) -> OrthancPluginErrorCode;

/// `_OrthancPluginOnChangeCallback`.
#[repr(C)]
struct OnChangeCallbackParams {
    callback: OnChangeCallback,
}

/// `_OrthancPluginOutputPlusArgument`.
#[repr(C)]
struct OutputPlusArgumentParams {
    output: *mut OrthancPluginRestOutput,
    argument: *const c_char,
}

/// `_OrthancPluginSendHttpStatus`.
#[repr(C)]
struct SendHttpStatusParams {
    output: *mut OrthancPluginRestOutput,
    status: u16,
    body: *const c_char,
    body_size: u32,
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
// REST routes.
// ---------------------------------------------------------------------------

/// Registers `regex` (Orthanc's Perl syntax) for GET/POST/PUT/DELETE with whole
/// bodies, answered by [`crate::routes::handle`]. Not mutually exclusive:
/// requests run in parallel on Orthanc's HTTP threads.
pub fn register_rest_route(regex: &str) {
    let regex = leak_c_string(regex);
    let params = RestCallbackParams {
        path_regular_expression: regex,
        callback: rest_callback,
    };
    let _ = invoke(
        SERVICE_REGISTER_REST_CALLBACK_NO_LOCK,
        ptr::from_ref(&params).cast(),
    );
}

/// Registers `regex` with streamed request bodies: POST/PUT bodies arrive
/// chunk by chunk in an [`crate::http::Upload`] from [`crate::routes::start_upload`];
/// GET/DELETE go to [`crate::routes::handle`]. Chunked routes run without a global lock.
pub fn register_chunked_route(regex: &str) {
    let regex = leak_c_string(regex);
    let params = ChunkedRestCallbackParams {
        path_regular_expression: regex,
        get_handler: Some(rest_callback),
        post_handler: Some(reader_factory),
        delete_handler: Some(rest_callback),
        put_handler: Some(reader_factory),
        add_chunk: reader_add_chunk,
        execute: reader_execute,
        finalize: reader_finalize,
    };
    let _ = invoke(
        SERVICE_REGISTER_CHUNKED_REST_CALLBACK,
        ptr::from_ref(&params).cast(),
    );
}

/// `PUT` on Orthanc's REST API, plugin routes included (no HTTP, no authentication: an internal call).
/// Returns Orthanc's error code on failure; the answer body is discarded.
pub fn rest_api_put(uri: &str, body: &[u8]) -> Result<(), i32> {
    let uri = CString::new(uri).map_err(|_| -1)?;
    let size = u32::try_from(body.len()).map_err(|_| -1)?;
    let mut answer = MemoryBuffer {
        data: ptr::null_mut(),
        size: 0,
    };
    let params = RestApiPostPutParams {
        target: &mut answer,
        uri: uri.as_ptr(),
        body: body.as_ptr().cast(),
        body_size: size,
    };
    let result = invoke(
        SERVICE_REST_API_PUT_AFTER_PLUGINS,
        ptr::from_ref(&params).cast(),
    );
    if !answer.data.is_null() {
        // SAFETY: Orthanc allocated the answer for us; released once, here.
        unsafe { free_orthanc_memory(answer.data) };
    }
    result
}

/// Calls [`crate::dicomweb_servers::orthanc_started`] once Orthanc has started
/// (its REST API, the DICOMweb plugin's routes included, is then complete).
pub fn register_started_callback() {
    let params = OnChangeCallbackParams {
        callback: on_change,
    };
    let _ = invoke(
        SERVICE_REGISTER_ON_CHANGE_CALLBACK,
        ptr::from_ref(&params).cast(),
    );
}

unsafe extern "C" fn on_change(
    change_type: i32,
    _resource_type: i32,
    _resource_id: *const c_char,
) -> OrthancPluginErrorCode {
    if change_type == CHANGE_ORTHANC_STARTED {
        guard(
            "registering DICOMweb servers",
            crate::dicomweb_servers::orthanc_started,
        );
    }
    ERROR_SUCCESS
}

/// Registers [`crate::routes::allow`] as Orthanc's incoming HTTP filter (403 when it refuses).
pub fn register_incoming_filter() {
    let params = IncomingFilterParams {
        callback: incoming_filter,
    };
    let _ = invoke(
        SERVICE_REGISTER_INCOMING_HTTP_REQUEST_FILTER2,
        ptr::from_ref(&params).cast(),
    );
}

/// Orthanc keeps the regular expression pointer: it must live as long as the process.
fn leak_c_string(text: &str) -> *const c_char {
    let owned = CString::new(text).expect("route patterns contain no NUL");
    Box::leak(owned.into_boxed_c_str()).as_ptr()
}

/// Copies a C string array of `count` items.
///
/// # Safety
/// `items` must point at `count` valid NUL-terminated strings (or `count` is 0).
unsafe fn strings(count: u32, items: *const *const c_char) -> Vec<String> {
    if count == 0 || items.is_null() {
        return Vec::new();
    }
    // SAFETY: guaranteed by the caller.
    unsafe {
        std::slice::from_raw_parts(items, count as usize)
            .iter()
            .map(|p| c_text(*p))
            .collect()
    }
}

/// # Safety
/// `p` is null or a valid NUL-terminated string.
unsafe fn c_text(p: *const c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        // SAFETY: guaranteed by the caller.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

fn method_of(code: i32) -> crate::http::Method {
    match code {
        HTTP_METHOD_POST => crate::http::Method::Post,
        HTTP_METHOD_PUT => crate::http::Method::Put,
        HTTP_METHOD_DELETE => crate::http::Method::Delete,
        HTTP_METHOD_GET => crate::http::Method::Get,
        // Orthanc has no other methods; read anything unexpected as the harmless one.
        _ => crate::http::Method::Get,
    }
}

/// Copies Orthanc's request into a [`crate::http::Request`].
///
/// # Safety
/// `url` and `request` are the pointers Orthanc passed to the current callback.
unsafe fn read_request(
    url: *const c_char,
    request: *const OrthancPluginHttpRequest,
    with_body: bool,
) -> crate::http::Request {
    // SAFETY: Orthanc guarantees both pointers for the duration of the callback.
    unsafe {
        let r = &*request;
        let mut headers = strings(r.headers_count, r.headers_keys)
            .into_iter()
            .zip(strings(r.headers_count, r.headers_values))
            .collect::<Vec<_>>();
        headers
            .iter_mut()
            .for_each(|(k, _)| k.make_ascii_lowercase());
        let body = if with_body && !r.body.is_null() && r.body_size > 0 {
            std::slice::from_raw_parts(r.body.cast::<u8>(), r.body_size as usize).to_vec()
        } else {
            Vec::new()
        };
        crate::http::Request {
            method: method_of(r.method),
            url: c_text(url),
            groups: strings(r.groups_count, r.groups),
            query: strings(r.get_count, r.get_keys)
                .into_iter()
                .zip(strings(r.get_count, r.get_values))
                .collect(),
            headers,
            body,
        }
    }
}

fn internal_error_response() -> crate::http::Response {
    crate::routes::error_response(
        dicomweb_oauth_core::ErrorCode::Int001,
        "internal error; see the Orthanc log",
    )
}

/// Sends `response` through `output`.
///
/// Orthanc wants 405 through its dedicated service (its generic status
/// service throws on 405 and 301, which took the whole process down); the
/// `Allow` header of the response becomes that service's argument.
fn send_response(output: *mut OrthancPluginRestOutput, response: &crate::http::Response) {
    if response.status == 405 {
        let allowed = response
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("allow"))
            .map_or("GET", |(_, v)| v.as_str());
        let allowed = CString::new(allowed).unwrap_or_default();
        let params = OutputPlusArgumentParams {
            output,
            argument: allowed.as_ptr(),
        };
        let _ = invoke(
            SERVICE_SEND_METHOD_NOT_ALLOWED,
            ptr::from_ref(&params).cast(),
        );
        return;
    }
    debug_assert_ne!(response.status, 301, "routes turn 301 into an error answer");
    for (name, value) in &response.headers {
        let (Ok(name), Ok(value)) = (CString::new(name.as_str()), CString::new(value.as_str()))
        else {
            continue;
        };
        let params = SetHttpHeaderParams {
            output,
            key: name.as_ptr(),
            value: value.as_ptr(),
        };
        let _ = invoke(SERVICE_SET_HTTP_HEADER, ptr::from_ref(&params).cast());
    }
    let Ok(size) = u32::try_from(response.body.len()) else {
        send_response(
            output,
            &crate::routes::error_response(
                dicomweb_oauth_core::ErrorCode::Int001,
                "answer larger than 4 GiB",
            ),
        );
        return;
    };
    if response.status == 200 {
        let mime = CString::new(response.content_type.as_str()).unwrap_or_default();
        let params = AnswerBufferParams {
            output,
            answer: response.body.as_ptr().cast(),
            answer_size: size,
            mime_type: mime.as_ptr(),
        };
        let _ = invoke(SERVICE_ANSWER_BUFFER, ptr::from_ref(&params).cast());
    } else {
        if !response.content_type.is_empty() {
            if let Ok(mime) = CString::new(response.content_type.as_str()) {
                let params = SetHttpHeaderParams {
                    output,
                    key: c"Content-Type".as_ptr(),
                    value: mime.as_ptr(),
                };
                let _ = invoke(SERVICE_SET_HTTP_HEADER, ptr::from_ref(&params).cast());
            }
        }
        let mut params = SendHttpStatusParams {
            output,
            status: response.status,
            body: response.body.as_ptr().cast(),
            body_size: size,
        };
        if invoke(SERVICE_SEND_HTTP_STATUS, ptr::from_ref(&params).cast()).is_err() {
            // Orthanc refuses statuses its enumeration lacks (1.10 has no 429):
            // nothing was sent yet, so answer with the nearest one it knows.
            params.status = crate::http::fallback_status(response.status);
            log(
                LogSeverity::Warning,
                &format!(
                    "Orthanc cannot send HTTP {}; answered {} instead",
                    response.status, params.status
                ),
            );
            let _ = invoke(SERVICE_SEND_HTTP_STATUS, ptr::from_ref(&params).cast());
        }
    }
}

unsafe extern "C" fn rest_callback(
    output: *mut OrthancPluginRestOutput,
    url: *const c_char,
    request: *const OrthancPluginHttpRequest,
) -> OrthancPluginErrorCode {
    // SAFETY: the pointers are Orthanc's, valid during this call.
    let request = match guard("reading a request", || unsafe {
        read_request(url, request, true)
    }) {
        Some(r) => r,
        None => {
            send_response(output, &internal_error_response());
            return ERROR_SUCCESS;
        }
    };
    let response = guard("a REST callback", || crate::routes::handle(&request))
        .unwrap_or_else(internal_error_response);
    guard("sending an answer", || send_response(output, &response));
    ERROR_SUCCESS
}

/// What stands behind an `OrthancPluginServerChunkedRequestReader` pointer.
enum ChunkedReader {
    Receiving(Box<dyn crate::http::Upload>),
    /// The request was refused (or failed); the answer is sent at execute.
    Refused(crate::http::Response),
    Done,
}

unsafe extern "C" fn reader_factory(
    reader: *mut *mut OrthancPluginServerChunkedRequestReader,
    url: *const c_char,
    request: *const OrthancPluginHttpRequest,
) -> OrthancPluginErrorCode {
    let state = guard("starting an upload", || {
        // SAFETY: the pointers are Orthanc's, valid during this call.
        let request = unsafe { read_request(url, request, false) };
        match crate::routes::start_upload(&request) {
            Ok(upload) => ChunkedReader::Receiving(upload),
            Err(response) => ChunkedReader::Refused(response),
        }
    })
    .unwrap_or_else(|| ChunkedReader::Refused(internal_error_response()));
    let boxed = Box::into_raw(Box::new(state));
    // SAFETY: `reader` is Orthanc's out-pointer for this call.
    unsafe { *reader = boxed.cast() };
    ERROR_SUCCESS
}

/// Orthanc's chunk buffer, lent to the upstream connection instead of copied.
/// Dropping the last `Bytes` that points into it drops the sender, which tells
/// `reader_add_chunk` that Orthanc may reuse the buffer.
struct LentOrthancBuffer {
    data: *const u8,
    len: usize,
    _on_release: std::sync::mpsc::SyncSender<()>,
}

// SAFETY: the buffer is only read, and `reader_add_chunk` keeps it alive (does not
// return to Orthanc) until every `Bytes` holding this owner, on any thread, is gone.
unsafe impl Send for LentOrthancBuffer {}

impl AsRef<[u8]> for LentOrthancBuffer {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: see `lend_orthanc_buffer`: `data` points to `len` readable bytes
        // for as long as this owner exists.
        unsafe { std::slice::from_raw_parts(self.data, self.len) }
    }
}

/// `Bytes` over Orthanc's buffer (no copy), and the receiver that disconnects when
/// the last of them is dropped.
///
/// # Safety
/// `data` must point to `len` readable bytes that stay valid until the receiver
/// reports the disconnection; the caller must wait for it before returning.
unsafe fn lend_orthanc_buffer(
    data: *const u8,
    len: usize,
) -> (Bytes, std::sync::mpsc::Receiver<()>) {
    let (on_release, released) = std::sync::mpsc::sync_channel(0);
    let owner = LentOrthancBuffer {
        data,
        len,
        _on_release: on_release,
    };
    (Bytes::from_owner(owner), released)
}

unsafe extern "C" fn reader_add_chunk(
    reader: *mut OrthancPluginServerChunkedRequestReader,
    data: *const c_void,
    size: u32,
) -> OrthancPluginErrorCode {
    // SAFETY: `reader` is the box created by reader_factory, alive until reader_finalize;
    // Orthanc calls the reader's callbacks one at a time.
    let state = unsafe { &mut *reader.cast::<ChunkedReader>() };
    let (chunk, released) = if data.is_null() || size == 0 {
        (Bytes::new(), None)
    } else {
        // SAFETY: Orthanc passes `size` readable bytes that stay valid for the duration
        // of this call; `released` is waited for below, before returning.
        let (chunk, released) = unsafe { lend_orthanc_buffer(data.cast::<u8>(), size as usize) };
        (chunk, Some(released))
    };
    let receiving = &mut *state;
    let outcome = guard("receiving a chunk", move || match receiving {
        ChunkedReader::Receiving(upload) => upload.add_chunk(chunk).err(),
        _ => None,
    });
    if let Some(released) = released {
        // Every `Bytes` pointing into Orthanc's buffer is gone once the sender side
        // disconnects (also after a panic: unwinding dropped the closure's copy).
        let _ = released.recv();
    }
    match outcome {
        Some(None) => {}
        Some(Some(refusal)) => *state = ChunkedReader::Refused(refusal),
        None => *state = ChunkedReader::Refused(internal_error_response()),
    }
    ERROR_SUCCESS
}

unsafe extern "C" fn reader_execute(
    reader: *mut OrthancPluginServerChunkedRequestReader,
    output: *mut OrthancPluginRestOutput,
) -> OrthancPluginErrorCode {
    // SAFETY: as in reader_add_chunk.
    let state = unsafe { &mut *reader.cast::<ChunkedReader>() };
    let response = match std::mem::replace(state, ChunkedReader::Done) {
        ChunkedReader::Receiving(upload) => {
            guard("finishing an upload", || upload.finish()).unwrap_or_else(internal_error_response)
        }
        ChunkedReader::Refused(response) => response,
        ChunkedReader::Done => internal_error_response(),
    };
    guard("sending an answer", || send_response(output, &response));
    ERROR_SUCCESS
}

unsafe extern "C" fn reader_finalize(reader: *mut OrthancPluginServerChunkedRequestReader) {
    if reader.is_null() {
        return;
    }
    // SAFETY: the box created by reader_factory, released exactly once, here.
    let state = unsafe { Box::from_raw(reader.cast::<ChunkedReader>()) };
    guard("releasing an upload", move || drop(state));
}

unsafe extern "C" fn incoming_filter(
    method: i32,
    uri: *const c_char,
    ip: *const c_char,
    _headers_count: u32,
    _headers_keys: *const *const c_char,
    _headers_values: *const *const c_char,
    _get_count: u32,
    _get_keys: *const *const c_char,
    _get_values: *const *const c_char,
) -> i32 {
    // SAFETY: Orthanc's strings, valid during this call.
    let (uri, ip) = unsafe { (c_text(uri), c_text(ip)) };
    match guard("the incoming HTTP filter", || {
        crate::routes::allow(method_of(method), &uri, &ip)
    }) {
        Some(true) => 1,
        Some(false) => 0,
        None => -1,
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
mod lending {
    use super::lend_orthanc_buffer;
    use std::sync::mpsc::TryRecvError;

    #[test]
    fn the_buffer_is_released_only_when_the_last_clone_is_gone() {
        let orthanc_buffer = vec![7u8; 1000];
        // SAFETY: `orthanc_buffer` outlives the `released` wait at the end of the test.
        let (bytes, released) =
            unsafe { lend_orthanc_buffer(orthanc_buffer.as_ptr(), orthanc_buffer.len()) };
        assert_eq!(bytes.as_ptr(), orthanc_buffer.as_ptr(), "no copy was made");
        let part = bytes.slice(10..20);
        drop(bytes);
        assert_eq!(
            released.try_recv(),
            Err(TryRecvError::Empty),
            "still lent while a slice of it lives"
        );
        let elsewhere = std::thread::spawn(move || part.iter().map(|&b| u32::from(b)).sum::<u32>());
        assert_eq!(elsewhere.join().unwrap(), 70);
        assert!(
            released.recv().is_err(),
            "released once the last clone is dropped"
        );
    }
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
            (
                "_OrthancPluginService_SendMethodNotAllowed",
                SERVICE_SEND_METHOD_NOT_ALLOWED as i64,
            ),
            (
                "sizeof(_OrthancPluginOutputPlusArgument)",
                size_of::<OutputPlusArgumentParams>() as i64,
            ),
            (
                "_OrthancPluginService_RegisterOnChangeCallback",
                SERVICE_REGISTER_ON_CHANGE_CALLBACK as i64,
            ),
            (
                "_OrthancPluginService_RestApiPutAfterPlugins",
                SERVICE_REST_API_PUT_AFTER_PLUGINS as i64,
            ),
            (
                "OrthancPluginChangeType_OrthancStarted",
                CHANGE_ORTHANC_STARTED as i64,
            ),
            (
                "sizeof(OrthancPluginMemoryBuffer)",
                size_of::<MemoryBuffer>() as i64,
            ),
            (
                "sizeof(_OrthancPluginRestApiPostPut)",
                size_of::<RestApiPostPutParams>() as i64,
            ),
            (
                "offsetof(_OrthancPluginRestApiPostPut, bodySize)",
                offset_of!(RestApiPostPutParams, body_size) as i64,
            ),
            (
                "sizeof(_OrthancPluginOnChangeCallback)",
                size_of::<OnChangeCallbackParams>() as i64,
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
