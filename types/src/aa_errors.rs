//! EntryPoint v0.7 "AAxx" failure codes, in words, with what to do about each.

/// Describes an EntryPoint failure reason such as `"AA25 invalid account nonce"`.
pub fn describe(reason: &str) -> String {
    let code = reason.get(..4).unwrap_or(reason);
    let advice = match code {
        "AA10" => "the account already exists: send the operation without initCode (factory)",
        "AA13" => {
            "initCode failed or ran out of gas: check the factory call and verificationGasLimit"
        }
        "AA14" => {
            "initCode returned another address than the sender: the factory/salt do not match the account"
        }
        "AA15" => "initCode did not deploy the sender",
        "AA20" => {
            "the account is not deployed and no initCode was given: deploy it or add the factory"
        }
        "AA21" => {
            "the account did not pay its prefund: the operation needs a paymaster (nodes hold no ETH)"
        }
        "AA22" => "the operation is expired or not yet valid",
        "AA23" => {
            "the account's validateUserOp reverted: the calldata is not one the account accepts"
        }
        "AA24" => "signature error: the operation was not signed by the key the account expects",
        "AA25" => "invalid account nonce: re-read EntryPoint.getNonce and rebuild the operation",
        "AA26" => "validation used more than verificationGasLimit: re-estimate gas",
        "AA30" => "the paymaster has no code at that address",
        "AA31" => "the paymaster's EntryPoint deposit is too low: the operator must top it up",
        "AA32" => {
            "the paymaster's signature is expired or not yet valid: ask the gas manager again"
        }
        "AA33" => {
            "the paymaster's validation reverted (CostAboveSignedMaximum: the operation may cost more than the sponsor signed for; ask the gas manager again instead of raising gas fields)"
        }
        "AA34" => {
            "the paymaster's signature is invalid: the gas fields changed after sponsorship or the sponsor key differs"
        }
        "AA36" => "paymaster validation used more than paymasterVerificationGasLimit",
        "AA40" => "verification used more than verificationGasLimit",
        "AA41" => "too little verification gas for the paymaster",
        "AA50" => "the paymaster's postOp reverted",
        "AA51" => "the prefund was below the actual gas cost",
        "AA90" => "the bundler gave an invalid beneficiary",
        "AA91" => "the EntryPoint failed to pay the bundler's beneficiary",
        "AA93" => "paymasterAndData is malformed (shorter than 52 bytes)",
        "AA94" => "a gas value overflows 120 bits",
        "AA95" => "the bundle transaction ran out of gas",
        "AA96" => "invalid aggregator",
        _ => return reason.to_string(),
    };
    format!("{reason} ({advice})")
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[test]
    fn known_codes_get_advice_and_unknown_pass_through() {
        assert!(describe("AA25 invalid account nonce").contains("getNonce"));
        assert!(describe("AA34 signature error").contains("paymaster"));
        assert_eq!(describe("something else"), "something else");
        assert_eq!(describe("AA"), "AA");
    }
}
