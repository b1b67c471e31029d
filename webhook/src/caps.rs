//! The operator's caps on an operation's gas fields and cost ([`GasCaps`]). Issue 14: a member
//! had an ordinary `send` sponsored with preVerificationGas 40M and 200 gwei fees and, as its
//! own bundler, moved 8 ETH of the paymaster's deposit to itself. The policy view looks at
//! sender and calldata only; these caps look at the money.

use alloy::primitives::U256;
use attestmesh_types::webhook::SponsoredGas;

use crate::config::GasCaps;

/// The first field above its cap, as a denial reason (`cap: <field> <value> above the operator's
/// cap <cap>`), or `None`. Absent fields are not set yet and pass; the total cost is checked
/// once every field it needs is present.
pub(crate) fn check(gas: &SponsoredGas, caps: &GasCaps) -> Option<String> {
    let fields = [
        ("maxFeePerGas", gas.max_fee_per_gas, caps.max_fee_per_gas),
        (
            "maxPriorityFeePerGas",
            gas.max_priority_fee_per_gas,
            caps.max_fee_per_gas,
        ),
        (
            "preVerificationGas",
            gas.pre_verification_gas,
            caps.pre_verification_gas,
        ),
        (
            "verificationGasLimit",
            gas.verification_gas_limit,
            caps.verification_gas_limit,
        ),
        ("callGasLimit", gas.call_gas_limit, caps.call_gas_limit),
    ];
    for (field, value, cap) in fields {
        if let Some(value) = value
            && value > cap
        {
            return Some(format!(
                "cap: {field} {value} above the operator's cap {cap}"
            ));
        }
    }
    if let Some(cost) = gas.max_cost()
        && cost > caps.max_cost
    {
        return Some(format!(
            "cap: maximum cost {cost} wei (every gas limit × maxFeePerGas) above the operator's cap {} wei",
            caps.max_cost
        ));
    }
    None
}

/// The caps as `/healthz` shows them (decimal strings: wei amounts exceed JSON's safe integers).
pub(crate) fn describe(caps: &GasCaps) -> serde_json::Value {
    let text = |value: U256| serde_json::Value::String(value.to_string());
    serde_json::json!({
        "max_fee_per_gas": text(caps.max_fee_per_gas),
        "pre_verification_gas": text(caps.pre_verification_gas),
        "verification_gas_limit": text(caps.verification_gas_limit),
        "call_gas_limit": text(caps.call_gas_limit),
        "max_cost_wei": text(caps.max_cost),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ordinary_send() -> SponsoredGas {
        SponsoredGas {
            call_gas_limit: Some(U256::from(80_000)),
            verification_gas_limit: Some(U256::from(150_000)),
            pre_verification_gas: Some(U256::from(60_000)),
            max_fee_per_gas: Some(U256::from(20_000_000u64)),
            max_priority_fee_per_gas: Some(U256::from(1_000_000u64)),
            paymaster_verification_gas_limit: Some(U256::from(40_000)),
            paymaster_post_op_gas_limit: Some(U256::ZERO),
        }
    }

    #[test]
    fn an_ordinary_send_on_base_passes_the_defaults() {
        assert_eq!(check(&ordinary_send(), &GasCaps::default()), None);
        assert_eq!(check(&SponsoredGas::default(), &GasCaps::default()), None);
    }

    /// Issue 14's drain: preVerificationGas 40M and 200 gwei fees.
    #[test]
    fn the_drain_is_denied_naming_the_field_and_the_cap() {
        let mut drain = ordinary_send();
        drain.pre_verification_gas = Some(U256::from(40_000_000));
        assert_eq!(
            check(&drain, &GasCaps::default()).as_deref(),
            Some("cap: preVerificationGas 40000000 above the operator's cap 1000000")
        );
        let mut fees = ordinary_send();
        fees.max_fee_per_gas = Some(U256::from(200_000_000_000u64));
        assert_eq!(
            check(&fees, &GasCaps::default()).as_deref(),
            Some("cap: maxFeePerGas 200000000000 above the operator's cap 1000000000")
        );
    }

    #[test]
    fn the_total_cost_is_capped_even_when_each_field_is_under_its_cap() {
        let caps = GasCaps::default();
        let gas = SponsoredGas {
            call_gas_limit: Some(caps.call_gas_limit),
            verification_gas_limit: Some(caps.verification_gas_limit),
            pre_verification_gas: Some(caps.pre_verification_gas),
            max_fee_per_gas: Some(caps.max_fee_per_gas),
            ..SponsoredGas::default()
        };
        let reason = check(&gas, &caps).unwrap();
        assert!(
            reason.starts_with("cap: maximum cost 8000000000000000 wei"),
            "{reason}"
        );
        // Without a fee the cost is not known yet: only the fields are checked.
        let unpriced = SponsoredGas {
            max_fee_per_gas: None,
            ..gas
        };
        assert_eq!(check(&unpriced, &caps), None);
    }
}
