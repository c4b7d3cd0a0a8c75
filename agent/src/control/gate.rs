//! Where the data path meets the control rules: [`admit`] after the request body was read
//! (before anything goes upstream, so streamed requests are refused before their stream
//! starts), [`settle`] when the exchange's record is built.

use crate::{
    analysis::{Action, Finding, Location, Severity},
    llm::refusal_response,
    llm::{Provider, usage::estimate_tokens},
    proxy::{context::ExchangeContext, error::ProxyError, record::ExchangeRecord},
};

use super::{Control, Identity, engine::Request};

/// The provider name rules match: the engine's, else the provider list's (as the trace row).
fn provider_name(engine: Provider, listed: &str) -> &str {
    match engine {
        Provider::Unknown => listed,
        p => p.as_str(),
    }
}

fn finding(kind: &'static str, rule: &str, group: &str, note: &str) -> Finding {
    let mut excerpt = if group.is_empty() {
        format!("rule {rule}")
    } else {
        format!("rule {rule} ({group})")
    };
    if !note.is_empty() {
        excerpt.push_str(": ");
        excerpt.push_str(note);
    }
    Finding {
        kind,
        severity: Severity::Medium,
        confidence: 1.0,
        location: Location::Request,
        excerpt,
        span: 0..0,
        view: None,
    }
}

/// Tells a new exchange who is calling, for policy rules with a selector (model and key are
/// added by the exchange once known).
pub fn identify(control: &Control, ctx: &mut ExchangeContext) {
    let conn = ctx.conn.clone();
    let Some(ex) = ctx.llm.exchange_mut().filter(|ex| ex.wants_identity()) else {
        return;
    };
    let mut id = Identity::of_process(control.node(), &conn.process, &conn.details);
    id.provider = provider_name(ex.endpoint().provider, &conn.provider);
    id.api_key_fingerprint = ex.key_fingerprint().unwrap_or("");
    let owned = super::OwnedIdentity::of(&id);
    ex.set_identity(owned);
}

/// Admits the exchange or refuses it with the provider-shaped response; either way the
/// trace row carries the rule as a finding. Exchanges the engine did not recognise pass.
pub fn admit(control: &Control, ctx: &mut ExchangeContext) -> Result<(), ProxyError> {
    // The atomic check first: with nothing blocked it costs no lock.
    if !control.quarantined() && !control.active() {
        return Ok(());
    }
    let conn = ctx.conn.clone();
    let Some(ex) = ctx.llm.exchange_mut() else {
        return Ok(());
    };
    let admission = {
        let mut id = Identity::of_process(control.node(), &conn.process, &conn.details);
        id.provider = provider_name(ex.endpoint().provider, &conn.provider);
        id.model = ex.model().unwrap_or("");
        id.api_key_fingerprint = ex.key_fingerprint().unwrap_or("");
        let info = ex.request_info();
        control.admit(&Request {
            id,
            max_tokens: info.max_tokens,
            input_tokens: estimate_tokens(&info.prompt),
        })
    };
    for (rule, kind) in &admission.flagged {
        ex.add_request_finding(finding(kind, rule, "", ""), Action::Flag);
    }
    let Some(r) = admission.refused else {
        return Ok(());
    };
    ex.add_request_finding(finding(r.kind, &r.rule, &r.group, &r.note), Action::Block);
    let dialect = ex.endpoint().dialect;
    Err(ProxyError::Policy(refusal_response(
        dialect,
        r.why,
        &r.message,
        r.retry_after_s,
    )))
}

/// Counts an ended exchange's cost (estimated by the engine when usage was missing) and
/// tokens against the limits that apply to it.
pub fn settle(control: &Control, record: &ExchangeRecord) {
    let Some(llm) = record.llm.as_deref() else {
        return;
    };
    let a = &llm.analysis;
    let tokens = a.input_tokens.unwrap_or(0) + a.output_tokens.unwrap_or(0);
    if a.cost_usd.is_none() && tokens == 0 {
        return;
    }
    let mut id = Identity::of_process(control.node(), &record.process, &record.details);
    id.provider = provider_name(a.provider, &record.provider);
    id.model = a.model.as_deref().unwrap_or("");
    id.api_key_fingerprint = a.api_key_fingerprint.as_deref().unwrap_or("");
    control.settle(&id, a.cost_usd, tokens);
}
