//! The packed UserOperation (types crate) as each generated binding's `PackedUserOperation`.
//!
//! `sol!` emits one struct per binding module, so the same packed op needs one conversion per
//! contract it is passed to: the EntryPoint (`handleOps`), the account (`validateUserOp`, the
//! standard IAccount signature) and the paymaster (`validatePaymasterUserOp`, `getHash`).

use attestmesh_bindings::{entry_point, member_account, paymaster};
use attestmesh_types::userop::PackedUserOp;

macro_rules! convert {
    ($name:ident, $module:ident :: $contract:ident) => {
        /// The packed op as this binding's struct.
        pub fn $name(op: &PackedUserOp) -> $module::$contract::PackedUserOperation {
            $module::$contract::PackedUserOperation {
                sender: op.sender,
                nonce: op.nonce,
                initCode: op.init_code.clone(),
                callData: op.call_data.clone(),
                accountGasLimits: op.account_gas_limits,
                preVerificationGas: op.pre_verification_gas,
                gasFees: op.gas_fees,
                paymasterAndData: op.paymaster_and_data.clone(),
                signature: op.signature.clone(),
            }
        }
    };
}

convert!(for_entry_point, entry_point::EntryPoint);
convert!(for_account, member_account::MemberAccount);
convert!(for_paymaster, paymaster::VerifyingPaymaster);
