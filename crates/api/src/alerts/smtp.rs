//! A minimal SMTP client (RFC 5321) for alert e-mails: `EHLO`, `STARTTLS` (RFC 3207) or
//! implicit TLS (RFC 8314 3.3, "submissions" on port 465) when configured, `AUTH PLAIN` (RFC
//! 4616) when a user name is configured, `MAIL FROM`, `RCPT TO`, `DATA` (dot-stuffed, RFC 5321
//! 4.5.2), `QUIT`; one plain text UTF-8 message per conversation (the `lettre` crate was not
//! available offline here).
//!
//! TLS is rustls with the certificate verified against the roots the caller put in the
//! [`rustls::ClientConfig`] (the system's, or a configured CA file) and the host name (or IP
//! address) of `[alerts] smtp_host`. Credentials are never sent over a connection that is not
//! TLS: a user name without TLS fails the delivery before connecting, and a server that does not
//! offer `STARTTLS` when it is required fails it (no downgrade to plain text).
//!
//! A 5xx reply is a permanent failure (the address or the message is refused), and so are TLS
//! failures (a certificate that does not verify, no `STARTTLS`): they are configuration errors
//! that retrying cannot mend. 4xx replies, timeouts and connection errors are retried by the
//! caller.

use std::time::Duration;

use base64::Engine;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::{SmtpOptions, SmtpTls};

/// Why a mail was not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpError {
    /// A 5xx reply or an unusable address: retrying cannot help.
    pub permanent: bool,
    /// The reply or the I/O error.
    pub message: String,
}

fn io(e: std::io::Error) -> SmtpError {
    SmtpError {
        permanent: false,
        message: format!("SMTP: {e}"),
    }
}

fn permanent(message: String) -> SmtpError {
    SmtpError {
        permanent: true,
        message,
    }
}

/// The TLS handshake's error: a certificate that does not verify is named as such (a
/// configuration error, permanent); other failures (the peer closed, a reset) are retried.
fn handshake_error(host: &str, e: std::io::Error) -> SmtpError {
    let cert = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .map(|r| {
            matches!(
                r,
                rustls::Error::InvalidCertificate(_)
                    | rustls::Error::NoCertificatesPresented
                    | rustls::Error::AlertReceived(_)
                    | rustls::Error::PeerIncompatible(_)
                    | rustls::Error::PeerMisbehaved(_)
            )
        })
        .unwrap_or(false);
    if cert {
        permanent(format!(
            "SMTP TLS handshake with {host}: {e} (check [alerts] smtp_ca_file and smtp_host)"
        ))
    } else {
        SmtpError {
            permanent: false,
            message: format!("SMTP TLS handshake with {host}: {e}"),
        }
    }
}

/// The connection under the SMTP conversation: TCP, or TLS over it.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// An address usable in `MAIL FROM`/`RCPT TO` and headers: no spaces, controls or brackets.
pub fn valid_address(a: &str) -> bool {
    let ok_chars = !a.is_empty()
        && a.len() <= 254
        && a.chars()
            .all(|c| !c.is_control() && !c.is_whitespace() && !"<>,;\"\\".contains(c));
    ok_chars
        && a.split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty())
}

/// RFC 5322 date of `ms` (UTC).
fn rfc5322_date(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = vesalius_deid::civil_from_days(days);
    let wd = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
    let mon = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(m - 1) as usize];
    format!(
        "{wd}, {d:02} {mon} {y} {:02}:{:02}:{:02} +0000",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The message: headers and the dot-stuffed body, ending in `CRLF.CRLF`.
pub fn message(from: &str, to: &str, subject: &str, body: &str, now_ms: i64, id: &str) -> String {
    let subject: String = subject.chars().filter(|c| !c.is_control()).collect();
    let subject = if subject.is_ascii() {
        subject
    } else {
        // RFC 2047 encoded word.
        format!(
            "=?utf-8?B?{}?=",
            base64::engine::general_purpose::STANDARD.encode(subject)
        )
    };
    let domain = from.rsplit_once('@').map_or("localhost", |(_, d)| d);
    let mut m = format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nDate: {}\r\n\
         Message-ID: <{id}@{domain}>\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\
         Auto-Submitted: auto-generated\r\n\r\n",
        rfc5322_date(now_ms)
    );
    for line in body.replace("\r\n", "\n").split('\n') {
        if line.starts_with('.') {
            m.push('.');
        }
        m.push_str(line);
        m.push_str("\r\n");
    }
    m.push_str(".\r\n");
    m
}

struct Conn {
    /// Replies are read through the buffer; commands are written through it (unbuffered).
    s: BufReader<Box<dyn Stream>>,
    /// Whether the conversation is under TLS (credentials may be sent).
    tls: bool,
}

impl Conn {
    /// Starts TLS over this connection (after `220` to `STARTTLS`, or at once for implicit TLS).
    async fn start_tls(
        self,
        config: &std::sync::Arc<rustls::ClientConfig>,
        host: &str,
    ) -> Result<Conn, SmtpError> {
        // RFC 3207 5: anything the server sent before the handshake is not to be trusted (a
        // man in the middle may have injected replies in the clear); refuse rather than mix.
        if !self.s.buffer().is_empty() {
            return Err(permanent(format!(
                "SMTP STARTTLS with {host}: the server sent data before the TLS handshake"
            )));
        }
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| permanent(format!("SMTP: {host:?} is not a TLS server name: {e}")))?;
        let stream = tokio_rustls::TlsConnector::from(config.clone())
            .connect(name, self.s.into_inner())
            .await
            .map_err(|e| handshake_error(host, e))?;
        Ok(Conn {
            s: BufReader::new(Box::new(stream)),
            tls: true,
        })
    }

    /// Reads one (possibly multi-line) reply: its code and text.
    async fn reply(&mut self) -> Result<(u16, String), SmtpError> {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            let n = (&mut self.s)
                .take(4096)
                .read_line(&mut line)
                .await
                .map_err(io)?;
            if n == 0 {
                return Err(io(std::io::ErrorKind::UnexpectedEof.into()));
            }
            let code = line
                .get(..3)
                .and_then(|c| c.parse::<u16>().ok())
                .ok_or_else(|| SmtpError {
                    permanent: false,
                    message: format!("SMTP: unreadable reply {:?}", line.trim_end()),
                })?;
            text.push_str(line.get(4..).unwrap_or("").trim_end());
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok((code, text));
            }
            text.push(' ');
        }
    }

    /// Sends `line` and expects a reply of class `class` (2 or 3).
    async fn command(&mut self, line: &str, class: u16, what: &str) -> Result<String, SmtpError> {
        let s = self.s.get_mut();
        s.write_all(format!("{line}\r\n").as_bytes())
            .await
            .map_err(io)?;
        s.flush().await.map_err(io)?;
        self.expect(class, what).await
    }

    async fn expect(&mut self, class: u16, what: &str) -> Result<String, SmtpError> {
        let (code, text) = self.reply().await?;
        if code / 100 == class {
            return Ok(text);
        }
        Err(SmtpError {
            permanent: code >= 500,
            message: format!("SMTP {what}: {code} {text}"),
        })
    }
}

use tokio::io::AsyncReadExt;

/// Sends one mail to `to`.
pub async fn send(
    opts: &SmtpOptions,
    to: &str,
    subject: &str,
    body: &str,
    now_ms: i64,
) -> Result<(), SmtpError> {
    if !valid_address(to) || !valid_address(&opts.from) {
        return Err(SmtpError {
            permanent: true,
            message: format!("SMTP: unusable address {to:?} or {:?}", opts.from),
        });
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    let msg = message(&opts.from, to, subject, body, now_ms, &id);
    if opts.username.is_some() && matches!(opts.tls, SmtpTls::None) {
        return Err(permanent(
            "SMTP: refusing to send the user name and password without TLS ([alerts] smtp_tls = \"none\")"
                .into(),
        ));
    }
    let talk = async {
        let stream = TcpStream::connect((opts.host.as_str(), opts.port))
            .await
            .map_err(io)?;
        let _ = stream.set_nodelay(true);
        let mut c = Conn {
            s: BufReader::new(Box::new(stream) as Box<dyn Stream>),
            tls: false,
        };
        if let SmtpTls::Implicit(config) = &opts.tls {
            c = c.start_tls(config, &opts.host).await?;
        }
        c.expect(2, "greeting").await?;
        let ehlo = format!("EHLO {}", opts.helo);
        let offered = c.command(&ehlo, 2, "EHLO").await?;
        if let SmtpTls::StartTls(config) = &opts.tls {
            // The EHLO reply's lines are joined by spaces; each keyword starts a line.
            if !offered
                .split(' ')
                .any(|k| k.eq_ignore_ascii_case("STARTTLS"))
            {
                return Err(permanent(format!(
                    "SMTP: {} does not offer STARTTLS, which [alerts] smtp_tls = \"starttls\" requires",
                    opts.host
                )));
            }
            c.command("STARTTLS", 2, "STARTTLS").await?;
            c = c.start_tls(config, &opts.host).await?;
            // RFC 3207 4.2: the client must discard what it knew and say EHLO again.
            c.command(&ehlo, 2, "EHLO").await?;
        }
        if let Some(user) = &opts.username {
            // Checked above already; kept next to the secret so no path sends it in clear.
            if !c.tls {
                return Err(permanent("SMTP: refusing AUTH without TLS".into()));
            }
            let token = base64::engine::general_purpose::STANDARD.encode(format!(
                "\0{user}\0{}",
                opts.password.as_deref().unwrap_or("")
            ));
            c.command(&format!("AUTH PLAIN {token}"), 2, "AUTH").await?;
        }
        c.command(&format!("MAIL FROM:<{}>", opts.from), 2, "MAIL FROM")
            .await?;
        c.command(&format!("RCPT TO:<{to}>"), 2, "RCPT TO").await?;
        c.command("DATA", 3, "DATA").await?;
        let w = c.s.get_mut();
        w.write_all(msg.as_bytes()).await.map_err(io)?;
        w.flush().await.map_err(io)?;
        c.expect(2, "message").await?;
        // The mail is accepted; a failing QUIT changes nothing.
        let _ = c.command("QUIT", 2, "QUIT").await;
        let _ = c.s.get_mut().shutdown().await;
        Ok(())
    };
    match tokio::time::timeout(opts.timeout.max(Duration::from_millis(100)), talk).await {
        Ok(r) => r,
        Err(_) => Err(SmtpError {
            permanent: false,
            message: format!("SMTP: no answer within {:?}", opts.timeout),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_addresses_and_dot_stuffing() {
        assert_eq!(rfc5322_date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(1_796_642_285_000),
            "Mon, 07 Dec 2026 11:18:05 +0000"
        );
        assert!(valid_address("a@b.example"));
        assert!(!valid_address("a@b.example>\r\nRCPT TO:<x@y"));
        assert!(!valid_address("nobody"));
        let m = message(
            "v@site.example",
            "a@b.example",
            "Hi\r\nBcc: x",
            ".dot\nline",
            0,
            "1",
        );
        assert!(m.contains("\r\nSubject: HiBcc: x\r\n"), "{m}");
        assert!(m.ends_with("\r\n\r\n..dot\r\nline\r\n.\r\n"), "{m}");
        let m = message(
            "v@site.example",
            "a@b.example",
            "Schlaganfall – Ankunft",
            "x",
            0,
            "1",
        );
        assert!(m.contains("Subject: =?utf-8?B?"), "{m}");
    }

    #[tokio::test]
    async fn credentials_are_never_sent_without_tls() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let opts = SmtpOptions {
            host: "127.0.0.1".into(),
            port: listener.local_addr().unwrap().port(),
            from: "v@site.example".into(),
            username: Some("vesalius".into()),
            password: Some("secret".into()),
            helo: "site".into(),
            timeout: Duration::from_secs(2),
            tls: SmtpTls::None,
        };
        let e = send(&opts, "a@b.example", "s", "b", 0).await.unwrap_err();
        assert!(e.permanent && e.message.contains("without TLS"), "{e:?}");
        let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
        assert!(accepted.is_err(), "no connection was even made");
    }
}
