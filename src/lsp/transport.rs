//! LSP framing over stdio, our own: lsp-server's reader allocates whatever `Content-Length`
//! says before reading, and a malformed frame ends its reader thread with nothing sent back.
//! Here a frame's body is read as it arrives (never more than [`MAX_FRAME`]), a body that is not
//! a JSON-RPC message gets a `ParseError` response and the server goes on, and a broken header
//! ends the connection cleanly with one line on stderr.

use lsp_server::{Connection, Message};
use std::io::{self, BufRead, Read, Write};

/// Largest frame accepted: a document may be 16 MiB and JSON escaping can double it, plus room.
pub const MAX_FRAME: usize = 40 << 20;
/// Longest header line accepted.
const MAX_HEADER_LINE: usize = 1024;

/// What reading one frame gave.
#[derive(Debug)]
pub enum Frame {
    /// A message for the server.
    Message(Message),
    /// A frame whose body is not a JSON-RPC message: the text of the `ParseError` to answer.
    Malformed(String),
    /// The input ended between frames.
    End,
}

/// Reads one frame. `Err` means the stream can no longer be followed (a broken or oversized
/// header, or the input ending inside a frame): the caller stops.
pub fn read_frame(input: &mut impl BufRead) -> Result<Frame, String> {
    let mut length = None;
    let mut first = true;
    loop {
        let mut line = Vec::new();
        let n = input
            .by_ref()
            .take(MAX_HEADER_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| format!("cannot read: {e}"))?;
        if n == 0 {
            return if first { Ok(Frame::End) } else { Err("the input ended inside a frame header".into()) };
        }
        first = false;
        if !line.ends_with(b"\n") {
            return Err(format!("a frame header line is longer than {MAX_HEADER_LINE} bytes"));
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        if text.is_empty() {
            break;
        }
        let Some((name, value)) = text.split_once(':') else {
            return Err(format!("malformed frame header `{text}`"));
        };
        if name.trim().eq_ignore_ascii_case("content-length") {
            let value = value.trim();
            let n: usize =
                value.parse().map_err(|_| format!("Content-Length `{value}` is not a byte count"))?;
            if n > MAX_FRAME {
                return Err(format!("Content-Length {n} is over the {MAX_FRAME}-byte limit"));
            }
            length = Some(n);
        }
    }
    let length = length.ok_or("a frame without Content-Length")?;
    // Grows as bytes arrive, so a length that the sender never fills allocates nothing more.
    let mut body = Vec::new();
    input.by_ref().take(length as u64).read_to_end(&mut body).map_err(|e| format!("cannot read: {e}"))?;
    if body.len() < length {
        return Err(format!("the input ended {} bytes into a {length}-byte frame", body.len()));
    }
    Ok(match serde_json::from_slice::<Message>(&body) {
        Ok(m) => Frame::Message(m),
        Err(e) => Frame::Malformed(format!("not a JSON-RPC message: {e}")),
    })
}

/// Writes one frame.
pub fn write_frame(out: &mut impl Write, json: &str) -> io::Result<()> {
    write!(out, "Content-Length: {}\r\n\r\n", json.len())?;
    out.write_all(json.as_bytes())?;
    out.flush()
}

/// The JSON-RPC answer to a frame that could not be parsed (its id is unknown, so `null`).
pub fn parse_error(message: &str) -> String {
    serde_json::json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": { "code": lsp_server::ErrorCode::ParseError as i32, "message": message },
    })
    .to_string()
}

/// A connection over stdin/stdout with bounded framing, and the threads that move its bytes.
pub struct Stdio {
    reader: std::thread::JoinHandle<Result<(), String>>,
    writer: std::thread::JoinHandle<io::Result<()>>,
}

/// Starts the reader and writer threads; returns the server's end of the connection.
pub fn stdio() -> (Connection, Stdio) {
    let (server, client) = Connection::memory();
    let Connection { sender: to_server, receiver: from_server } = client;
    let writer = std::thread::spawn(move || {
        for msg in from_server {
            // One lock per message, so the reader's parse errors never interleave with it.
            let stdout = io::stdout();
            let mut out = stdout.lock();
            msg.write(&mut out)?;
        }
        Ok(())
    });
    let reader = std::thread::spawn(move || {
        let stdin = io::stdin();
        let mut input = stdin.lock();
        loop {
            match read_frame(&mut input) {
                Ok(Frame::End) => return Ok(()),
                Ok(Frame::Message(m)) => {
                    let exit = matches!(&m, Message::Notification(n) if n.method == "exit");
                    if to_server.send(m).is_err() || exit {
                        return Ok(());
                    }
                }
                Ok(Frame::Malformed(reason)) => {
                    let stdout = io::stdout();
                    let mut out = stdout.lock();
                    write_frame(&mut out, &parse_error(&reason)).map_err(|e| e.to_string())?;
                }
                Err(e) => return Err(e),
            }
        }
    });
    (server, Stdio { reader, writer })
}

impl Stdio {
    /// Waits for both threads once the server is done with its connection (dropped).
    pub fn join(self) -> Result<(), String> {
        let read = self.reader.join().map_err(|_| "the reader thread panicked".to_string())?;
        let written = self.writer.join().map_err(|_| "the writer thread panicked".to_string())?;
        written.map_err(|e| e.to_string())?;
        read.map_err(|e| format!("lsp: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(body: &str) -> Vec<u8> {
        format!("Content-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
    }

    #[test]
    fn reads_messages_and_answers_garbage() {
        let mut bytes = frame(r#"{"jsonrpc":"2.0","method":"initialized","params":{}}"#);
        bytes.extend(frame("{not json"));
        bytes.extend(frame(r#"{"jsonrpc":"2.0","id":1,"method":"shutdown"}"#));
        let mut input = io::Cursor::new(bytes);
        assert!(matches!(read_frame(&mut input), Ok(Frame::Message(Message::Notification(_)))));
        assert!(matches!(read_frame(&mut input), Ok(Frame::Malformed(_))));
        assert!(matches!(read_frame(&mut input), Ok(Frame::Message(Message::Request(_)))));
        assert!(matches!(read_frame(&mut input), Ok(Frame::End)));
    }

    #[test]
    fn huge_or_broken_lengths_stop_without_allocating() {
        // 2^60 bytes announced: refused from the header, nothing allocated.
        let mut input = io::Cursor::new(b"Content-Length: 1152921504606846976\r\n\r\n{}".to_vec());
        assert!(read_frame(&mut input).unwrap_err().contains("over the"));
        // Under the limit but never sent: the body ends early, an error, no hang.
        let mut input = io::Cursor::new(b"Content-Length: 41943040\r\n\r\n{}".to_vec());
        assert!(read_frame(&mut input).unwrap_err().contains("2 bytes into"));
        for bad in ["Content-Length: -1\r\n\r\n", "Content-Length: x\r\n\r\n", "garbage\r\n\r\n", "\r\n{}"] {
            assert!(read_frame(&mut io::Cursor::new(bad.as_bytes().to_vec())).is_err(), "{bad:?}");
        }
        let long = format!("X-{}: 1\r\n", "a".repeat(5000));
        assert!(read_frame(&mut io::Cursor::new(long.into_bytes())).is_err());
    }
}
