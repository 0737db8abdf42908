//! Structured logs through `tracing`, text or JSON, to the destinations of
//! `service.telemetry.logs.output_paths` (stderr by default).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::LogOutput;

/// Installs the global subscriber. `RUST_LOG` overrides `level` when set.
/// Files are created if missing and appended to; one that cannot be
/// opened is an error naming it. Calling it again (tests) is harmless.
pub fn init(level: &str, json: bool, outputs: &[LogOutput]) -> Result<(), String> {
    let sinks = Sinks::open(outputs)?;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},h2=warn,hyper=warn,tower=warn")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(sinks.all_terminal())
        .with_writer(sinks);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stream {
    Stderr,
    Stdout,
}

/// Every destination; each formatted event is written to all of them in
/// one `write` per destination, so lines never interleave.
#[derive(Clone)]
pub struct Sinks {
    streams: Vec<Stream>,
    files: Vec<Arc<Mutex<File>>>,
}

impl Sinks {
    /// Opens the files of `outputs`.
    pub fn open(outputs: &[LogOutput]) -> Result<Sinks, String> {
        let mut sinks = Sinks {
            streams: Vec::new(),
            files: Vec::new(),
        };
        for output in outputs {
            match output {
                LogOutput::Stderr => sinks.streams.push(Stream::Stderr),
                LogOutput::Stdout => sinks.streams.push(Stream::Stdout),
                LogOutput::File(path) => {
                    let file = OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .map_err(|e| format!("cannot open log output {}: {e}", path.display()))?;
                    sinks.files.push(Arc::new(Mutex::new(file)));
                }
            }
        }
        Ok(sinks)
    }

    /// Colours only when every destination is a terminal stream (never
    /// escape codes in a file), as before: stderr alone.
    fn all_terminal(&self) -> bool {
        self.files.is_empty() && !self.streams.is_empty()
    }
}

impl<'a> MakeWriter<'a> for Sinks {
    type Writer = Tee<'a>;

    fn make_writer(&'a self) -> Tee<'a> {
        Tee(self)
    }
}

/// One event's writer: everything goes to every destination.
pub struct Tee<'a>(&'a Sinks);

impl Write for Tee<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        // A destination that fails must not keep the line from the others.
        let mut first_error = None;
        for stream in &self.0.streams {
            let written = match stream {
                Stream::Stderr => io::stderr().lock().write_all(buf),
                Stream::Stdout => io::stdout().lock().write_all(buf),
            };
            first_error = first_error.or(written.err());
        }
        for file in &self.0.files {
            let mut file = file.lock().unwrap_or_else(|p| p.into_inner());
            first_error = first_error.or(file.write_all(buf).err());
        }
        first_error.map_or(Ok(()), Err)
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stdout().lock().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_goes_to_every_file_appended() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.log");
        std::fs::write(&a, "earlier\n").unwrap();
        let b = dir.path().join("b.log");
        let sinks = Sinks::open(&[LogOutput::File(a.clone()), LogOutput::File(b.clone())]).unwrap();
        assert!(!sinks.all_terminal());
        sinks.make_writer().write_all(b"one\n").unwrap();
        sinks.make_writer().write_all(b"two\n").unwrap();
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "earlier\none\ntwo\n");
        assert_eq!(std::fs::read_to_string(&b).unwrap(), "one\ntwo\n");
    }

    #[test]
    fn a_file_that_cannot_be_opened_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("x.log");
        let err = Sinks::open(&[LogOutput::File(path.clone())]).err().unwrap();
        assert!(err.contains(&path.display().to_string()), "{err}");
    }
}
