//! Alerts: telling people when work keeps failing. [`email`] is how a message leaves over SMTP.

pub mod email;
