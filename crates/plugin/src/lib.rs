//! orthanc-dicomweb-oauth: the Orthanc plugin.
//!
//! A thin layer over `dicomweb_oauth_core`: [`ffi`] owns every `unsafe` line
//! and the four entry points; [`plugin`] is what they call; [`logging`] routes
//! the core's `tracing` events to Orthanc's log.

#![deny(unsafe_op_in_unsafe_fn)]

mod dicomweb_servers;
mod ffi;
mod http;
mod logging;
mod plugin;
mod routes;
