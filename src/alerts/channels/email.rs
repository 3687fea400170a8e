//! The e-mail channel (SMTP with STARTTLS or TLS, a pooled transport).

use super::*;

/// E-mail channel: one message per recipient, plain UTF-8 text.
pub struct EmailNotifier {
    transport: lettre::AsyncSmtpTransport<lettre::Tokio1Executor>,
    from: lettre::message::Mailbox,
    utc_offset_minutes: i32,
}

impl EmailNotifier {
    pub(super) fn new(
        config: &Config,
        index: usize,
        channel: &ChannelConfig,
    ) -> anyhow::Result<Self> {
        use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
        let host = channel.smtp_host.clone().unwrap_or_default();
        let mut tls = TlsParameters::builder(host.clone());
        if let Some(ca) = &channel.ca {
            let path = config.resolve_path(ca);
            let pem = std::fs::read(&path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            tls = tls.add_root_certificate(Certificate::from_pem(&pem)?);
        }
        let tls = tls.build_rustls()?;
        let (mode, port) = match channel.security {
            SmtpSecurity::Starttls => (Tls::Required(tls), 587),
            SmtpSecurity::Tls => (Tls::Wrapper(tls), 465),
            SmtpSecurity::None => (Tls::None, 25),
        };
        let mut builder =
            lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous(host)
                .port(channel.smtp_port.unwrap_or(port))
                .tls(mode)
                .timeout(Some(Duration::from_secs(channel.timeout_s)));
        if let Some(user) = &channel.username {
            let password = channel
                .password
                .as_ref()
                .and_then(crate::config::Secret::value)
                .unwrap_or_default();
            builder =
                builder.credentials(lettre::transport::smtp::authentication::Credentials::new(
                    user.clone(),
                    password.to_string(),
                ));
        }
        let from = channel
            .from
            .as_deref()
            .unwrap_or_default()
            .parse()
            .map_err(|e| anyhow::anyhow!("alerts.channels[{index}].from: {e}"))?;
        Ok(EmailNotifier {
            transport: builder.build(),
            from,
            utc_offset_minutes: config
                .site
                .alerts
                .as_ref()
                .map_or(480, |a| a.utc_offset_minutes),
        })
    }
}

/// The e-mail for a batch to one address: subject = title, body = the plain text.
pub fn email_message(
    from: &lettre::message::Mailbox,
    batch: &Batch,
    utc_offset_minutes: i32,
) -> Result<lettre::Message, String> {
    let message = batch_message(batch, utc_offset_minutes);
    let to: lettre::message::Mailbox = batch
        .recipient
        .parse()
        .map_err(|e| format!("recipient `{}`: {e}", batch.recipient))?;
    let mut body = message.plain();
    if batch.is_digest() {
        body.push('\n');
        for n in &batch.notices {
            body.push_str(&render(n, utc_offset_minutes).plain());
            body.push('\n');
        }
    }
    lettre::Message::builder()
        .from(from.clone())
        .to(to)
        .subject(message.title)
        .header(lettre::message::header::ContentType::TEXT_PLAIN)
        .body(body)
        .map_err(|e| e.to_string())
}

impl Notifier for EmailNotifier {
    fn send<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            use lettre::AsyncTransport;
            let email = email_message(&self.from, batch, self.utc_offset_minutes)
                .map_err(SendError::new)?;
            self.transport
                .send(email)
                .await
                .map(|_| ())
                .map_err(|e| SendError::new(format!("SMTP: {e}")))
        })
    }
}
