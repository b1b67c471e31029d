// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {IMemberAccount} from "../account/IMemberAccount.sol";
import {DstackProof, NodeKeys} from "../lib/ClusterTypes.sol";
import {ProofStatus} from "../lib/DstackProofLib.sol";
import {IMemberFacet} from "../member/IMemberFacet.sol";
import {MemberStorage} from "../member/MemberStorage.sol";
import {IMessageFacet} from "../message/IMessageFacet.sol";
import {MessageStorage} from "../message/MessageStorage.sol";
import {
    RegistrationCheck,
    RegistrationStorage,
    RegistrationVerdict
} from "../registration/RegistrationStorage.sol";
import {ISponsorshipFacet} from "./ISponsorshipFacet.sol";

/// @title SponsorshipFacet
/// @notice Answers the paymaster webhook: is this operation one the cluster pays for?
/// @dev Every "yes" is an operation that would succeed when executed, so sponsored gas is never
///      spent on a revert the policy could have foreseen.
contract SponsorshipFacet is ISponsorshipFacet {
    /// @inheritdoc ISponsorshipFacet
    function checkSponsorship(address sender, bytes calldata callData)
        external
        view
        override
        returns (bool sponsorable, string memory reason)
    {
        if (callData.length < 4) return (false, "calldata has no function selector");
        bytes4 selector = bytes4(callData[:4]);
        if (selector == IMemberAccount.register.selector) {
            (DstackProof memory proof, NodeKeys memory keys) =
                abi.decode(callData[4:], (DstackProof, NodeKeys));
            return _checkRegistration(sender, proof, keys);
        }
        if (selector == IMemberAccount.execute.selector) {
            return _checkMemberCall(sender, abi.decode(callData[4:], (bytes)));
        }
        return (false, "only member-account register and execute are sponsored");
    }

    function _checkRegistration(address sender, DstackProof memory proof, NodeKeys memory keys)
        private
        view
        returns (bool, string memory)
    {
        RegistrationCheck memory check = RegistrationStorage.evaluate(sender, proof, keys);
        RegistrationVerdict verdict = check.verdict;
        if (verdict == RegistrationVerdict.NewMember) return (true, "");
        if (verdict == RegistrationVerdict.AlreadyRegistered) {
            return (false, "account is already an active member");
        }
        if (verdict == RegistrationVerdict.AppIdMismatch) {
            return (false, "proof app id is not the sender account");
        }
        if (verdict == RegistrationVerdict.AppIdNotAllowed) {
            return (false, "sender is not an allowlisted member account of this cluster");
        }
        if (verdict == RegistrationVerdict.BindingMismatch) {
            return (false, "proof message hash does not bind this chain, cluster, account and keys");
        }
        if (verdict == RegistrationVerdict.ProofInvalid) return (false, _proofReason(check.proofStatus));
        if (verdict == RegistrationVerdict.KmsRootNotAllowed) return (false, "KMS root is not allowlisted");
        if (verdict == RegistrationVerdict.MemberRevoked) return (false, "member account is revoked");
        return (false, "account is a member with different keys");
    }

    function _checkMemberCall(address sender, bytes memory data) private view returns (bool, string memory) {
        uint64 senderId = MemberStorage.idOf(sender);
        if (senderId == 0 || !MemberStorage.isActive(sender)) {
            return (false, "sender is not an active member");
        }
        if (data.length < 4) return (false, "member call has no function selector");
        // casting to 'bytes4' is safe because it takes the first four bytes, checked present above.
        // forge-lint: disable-next-line(unsafe-typecast)
        bytes4 selector = bytes4(data);
        bytes memory args = _afterSelector(data);
        if (selector == IMessageFacet.send.selector) {
            (uint64 recipient, bytes32 envelopeId, bytes memory ciphertext) =
                abi.decode(args, (uint64, bytes32, bytes));
            if (ciphertext.length == 0) return (false, "message ciphertext is empty");
            if (ciphertext.length > MessageStorage.MAX_CIPHERTEXT_SIZE) {
                return (false, "message ciphertext too large");
            }
            if (!MemberStorage.isActive(MemberStorage.layout().members[recipient].account)) {
                return (false, "message recipient is not an active member");
            }
            if (MessageStorage.layout().used[recipient][envelopeId]) {
                return (false, "message envelope id already used");
            }
            return (true, "");
        }
        if (selector == IMemberFacet.commitClusterSharedKey.selector) {
            bytes32 commitment = abi.decode(args, (bytes32));
            if (senderId != 1) return (false, "only the first registrant commits the CSK");
            if (MemberStorage.layout().cskCommitment != bytes32(0)) {
                return (false, "CSK commitment already set");
            }
            if (commitment == bytes32(0)) return (false, "CSK commitment is zero");
            return (true, "");
        }
        return (false, "member call is not a sponsored cluster function");
    }

    function _proofReason(ProofStatus status) private pure returns (string memory) {
        if (status == ProofStatus.DerivedKeyMalformed) {
            return "dstack proof: derived public key is malformed";
        }
        if (status == ProofStatus.AppKeyMalformed) return "dstack proof: app public key is malformed";
        if (status == ProofStatus.MessageSignatureInvalid) {
            return "dstack proof: message signature is invalid";
        }
        if (status == ProofStatus.AppSignatureInvalid) return "dstack proof: app signature is invalid";
        return "dstack proof: KMS signature is invalid";
    }

    function _afterSelector(bytes memory data) private pure returns (bytes memory tail) {
        uint256 length = data.length - 4;
        tail = new bytes(length);
        assembly ("memory-safe") {
            mcopy(add(tail, 32), add(data, 36), length)
        }
    }
}
