//! Container logs: what the supervisor reads from the container's stdout and stderr pipes,
//! written one line at a time with a timestamp and a stream tag, with size-based rotation; and
//! the reading side of `rcl logs [-f] [--since] [--timestamps]`.
//!
//! File format, one entry per line: `RFC3339-TIMESTAMP STREAM TEXT`, e.g.
//! `2026-11-22T21:10:00.123456789Z stdout hello`. The current file is `container.log`; when a
//! line would make it larger than [`LogConfig::max_size`] it becomes `container.log.1` (older
//! ones shift up) and at most [`LogConfig::max_files`] files are kept.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Name of the current log file.
pub const LOG_FILE: &str = "container.log";

/// A line longer than this (without a newline) is written out in pieces.
const MAX_LINE: usize = 16 * 1024;

/// Which output a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    /// The tag written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// When the supervisor read it.
    pub time: SystemTime,
    /// Which stream.
    pub stream: Stream,
    /// The text, without its newline.
    pub text: String,
}

impl LogLine {
    /// The entry as `rcl logs` prints it (with its RFC 3339 time first when `timestamps`),
    /// newline included.
    pub fn display(&self, timestamps: bool) -> String {
        if timestamps {
            format!(
                "{} {}\n",
                humantime::format_rfc3339_nanos(self.time),
                self.text
            )
        } else {
            format!("{}\n", self.text)
        }
    }

    fn parse(line: &str) -> Option<LogLine> {
        let (time, rest) = line.split_once(' ')?;
        let (stream, text) = rest.split_once(' ').unwrap_or((rest, ""));
        let stream = match stream {
            "stdout" => Stream::Stdout,
            "stderr" => Stream::Stderr,
            _ => return None,
        };
        Some(LogLine {
            time: humantime::parse_rfc3339(time).ok()?,
            stream,
            text: text.to_string(),
        })
    }
}

/// Rotation settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    /// Largest size of one file in bytes (default 10 MiB).
    pub max_size: u64,
    /// Files kept, the current one included (default 3).
    pub max_files: u32,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            max_size: 10 * 1024 * 1024,
            max_files: 3,
        }
    }
}

fn rotated(dir: &Path, n: u32) -> PathBuf {
    if n == 0 {
        dir.join(LOG_FILE)
    } else {
        dir.join(format!("{LOG_FILE}.{n}"))
    }
}

/// Appends entries to a container's log directory, rotating by size.
#[derive(Debug)]
pub struct LogWriter {
    dir: PathBuf,
    file: File,
    size: u64,
    cfg: LogConfig,
}

impl LogWriter {
    /// Opens (creating) the log directory `dir` for appending.
    pub fn open(dir: &Path, cfg: LogConfig) -> io::Result<LogWriter> {
        fs::create_dir_all(dir)?;
        let path = rotated(dir, 0);
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let size = file.metadata()?.len();
        Ok(LogWriter {
            dir: dir.to_path_buf(),
            file,
            size,
            cfg: LogConfig {
                max_files: cfg.max_files.max(1),
                ..cfg
            },
        })
    }

    /// Writes one entry; `text` must hold no newline (invalid UTF-8 is replaced).
    pub fn write(&mut self, stream: Stream, time: SystemTime, text: &[u8]) -> io::Result<()> {
        let line = format!(
            "{} {} {}\n",
            humantime::format_rfc3339_nanos(time),
            stream.as_str(),
            String::from_utf8_lossy(text)
        );
        if self.size > 0 && self.size + line.len() as u64 > self.cfg.max_size {
            self.rotate()?;
        }
        self.file.write_all(line.as_bytes())?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let last = self.cfg.max_files - 1;
        if last == 0 {
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        let _ = fs::remove_file(rotated(&self.dir, last));
        for n in (0..last).rev() {
            let from = rotated(&self.dir, n);
            if from.exists() {
                fs::rename(&from, rotated(&self.dir, n + 1))?;
            }
        }
        self.file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(rotated(&self.dir, 0))?;
        self.size = 0;
        Ok(())
    }
}

/// Splits a stream of bytes into lines for a [`LogWriter`], keeping a partial last line
/// until its newline arrives (or [`LinePump::finish`]).
#[derive(Debug)]
pub struct LinePump {
    stream: Stream,
    buf: Vec<u8>,
}

impl LinePump {
    /// A pump for `stream`.
    pub fn new(stream: Stream) -> LinePump {
        LinePump {
            stream,
            buf: Vec::new(),
        }
    }

    /// Feeds bytes read from the pipe; complete lines are written.
    pub fn feed(&mut self, data: &[u8], w: &mut LogWriter, now: SystemTime) -> io::Result<()> {
        self.buf.extend_from_slice(data);
        while let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=pos).collect();
            w.write(self.stream, now, &line[..line.len() - 1])?;
        }
        while self.buf.len() >= MAX_LINE {
            let piece: Vec<u8> = self.buf.drain(..MAX_LINE).collect();
            w.write(self.stream, now, &piece)?;
        }
        Ok(())
    }

    /// Writes what is left (a last line without newline) at end of stream.
    pub fn finish(&mut self, w: &mut LogWriter, now: SystemTime) -> io::Result<()> {
        if !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf);
            w.write(self.stream, now, &rest)?;
        }
        Ok(())
    }
}

/// Parses `--since`: an RFC 3339 time (`2026-11-22T21:00:00Z`) or a duration back from `now`
/// (`10m`, `1h30m`, `45s`).
pub fn parse_since(s: &str, now: SystemTime) -> Result<SystemTime, String> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(t);
    }
    match humantime::parse_duration(s) {
        Ok(d) => Ok(now.checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH)),
        Err(_) => Err(format!(
            "invalid --since {s:?}: expected a duration like 10m or 1h30m, or a time like \
             2026-11-22T21:00:00Z"
        )),
    }
}

fn parse_lines(text: &[u8], since: Option<SystemTime>, out: &mut Vec<LogLine>) {
    for l in String::from_utf8_lossy(text).lines() {
        if let Some(e) = LogLine::parse(l) {
            if since.is_none_or(|s| e.time >= s) {
                out.push(e);
            }
        }
    }
}

/// Reads a container's log entries, oldest first, those at or after `since` only when given.
/// An empty or missing directory gives no entries.
pub fn read(dir: &Path, since: Option<SystemTime>) -> io::Result<Vec<LogLine>> {
    let mut f = Follower::new(dir, since);
    f.poll()
}

/// Reads new log entries as they are written, across rotations (see [`follow`]).
#[derive(Debug)]
pub struct Follower {
    dir: PathBuf,
    since: Option<SystemTime>,
    /// The current file as we opened it, and its inode.
    cur: Option<(File, u64)>,
    /// Bytes of an incomplete last line.
    pending: Vec<u8>,
}

impl Follower {
    /// A follower that will first return everything already written (since `since`).
    pub fn new(dir: &Path, since: Option<SystemTime>) -> Follower {
        Follower {
            dir: dir.to_path_buf(),
            since,
            cur: None,
            pending: Vec::new(),
        }
    }

    fn drain(&mut self, out: &mut Vec<LogLine>) -> io::Result<()> {
        if let Some((f, _)) = &mut self.cur {
            let mut buf = Vec::new();
            f.read_to_end(&mut buf)?;
            self.pending.extend_from_slice(&buf);
            if let Some(pos) = self.pending.iter().rposition(|&b| b == b'\n') {
                let complete: Vec<u8> = self.pending.drain(..=pos).collect();
                parse_lines(&complete, self.since, out);
            }
        }
        Ok(())
    }

    /// Entries written since the last call.
    pub fn poll(&mut self) -> io::Result<Vec<LogLine>> {
        let mut out = Vec::new();
        if self.cur.is_none() {
            // First call: open the current file first, so nothing written meanwhile is lost,
            // then read the rotated ones, oldest first.
            let cur = File::open(rotated(&self.dir, 0)).ok();
            let mut n = 1;
            while rotated(&self.dir, n).exists() {
                n += 1;
            }
            for k in (1..n).rev() {
                if let Ok(text) = fs::read(rotated(&self.dir, k)) {
                    parse_lines(&text, self.since, &mut out);
                }
            }
            match cur {
                Some(f) => {
                    let ino = f.metadata()?.ino();
                    self.cur = Some((f, ino));
                }
                None => return Ok(out),
            }
        }
        self.drain(&mut out)?;
        // Rotated since we opened it? Finish the old file (done above), then go on with the new.
        let now_ino = fs::metadata(rotated(&self.dir, 0)).map(|m| m.ino()).ok();
        if let (Some(ino), Some((_, held))) = (now_ino, &self.cur) {
            if ino != *held {
                // Lines that rotated past `.1` too between two polls are lost; poll often.
                let f = File::open(rotated(&self.dir, 0))?;
                self.pending.clear();
                self.cur = Some((f, ino));
                if let Some((f, _)) = &mut self.cur {
                    f.seek(SeekFrom::Start(0))?;
                }
                self.drain(&mut out)?;
            }
        }
        Ok(out)
    }
}

/// Follows a container's log: calls `out` for every entry (those already written first),
/// polling every `interval` while `running()` is true, then reads what is left and returns.
pub fn follow(
    dir: &Path,
    since: Option<SystemTime>,
    interval: Duration,
    mut running: impl FnMut() -> bool,
    mut out: impl FnMut(&LogLine) -> io::Result<()>,
) -> io::Result<()> {
    let mut f = Follower::new(dir, since);
    loop {
        let alive = running();
        for l in f.poll()? {
            out(&l)?;
        }
        if !alive {
            return Ok(());
        }
        std::thread::sleep(interval);
    }
}
