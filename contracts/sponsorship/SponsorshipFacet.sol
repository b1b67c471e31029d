// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {IMemberAccount} from "../account/IMemberAccount.sol";
import {Strings} from "@openzeppelin/contracts/utils/Strings.sol";
import {DstackProof, Envelope, NodeKeys, SkipReason} from "../lib/ClusterTypes.sol";
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
///      spent on a revert (or a skipped envelope) the policy could have foreseen.
contract SponsorshipFacet is ISponsorshipFacet {
    /// @notice Most inner calls of a sponsored `executeBatch`; each selector once, so at most one
    ///         CSK commitment, one `send` and one `sendBatch`.
    uint256 internal constant MAX_SPONSORED_CALLS = 4;

    /// @dev The (recipient, envelope id) keys one operation sends, to refuse a repeat: on chain it
    ///      would be skipped (sendBatch) or revert the whole operation (send).
    struct SentKeys {
        bytes32[] keys;
        uint256 count;
    }

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
            bytes memory data = abi.decode(callData[4:], (bytes));
            (uint64 senderId, bool active) = _activeMember(sender);
            if (!active) return (false, "sender is not an active member");
            return _checkMemberCall(senderId, data, _newSentKeys());
        }
        if (selector == IMemberAccount.executeBatch.selector) {
            return _checkExecuteBatch(sender, abi.decode(callData[4:], (bytes[])));
        }
        // withdrawDepositTo (and anything else) is the owner's to pay: a sponsored withdrawal would
        // turn the paymaster's deposit into the member's.
        return (
            false,
            "only member-account register and execute are sponsored (register, execute, executeBatch; never withdrawDepositTo)"
        );
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
        if (verdict == RegistrationVerdict.PurposeMismatch) {
            return (false, "proof purpose is not attestmesh-owner");
        }
        if (verdict == RegistrationVerdict.ProofInvalid) return (false, _proofReason(check.proofStatus));
        if (verdict == RegistrationVerdict.KmsRootNotAllowed) return (false, "KMS root is not allowlisted");
        if (verdict == RegistrationVerdict.MemberRevoked) return (false, "member account is revoked");
        return (false, "account is a member with different keys");
    }

    /// @notice executeBatch runs its calls in order and reverts on the first failure, so every call
    ///         must pass on its own, and no two may collide (same selector, same envelope).
    function _checkExecuteBatch(address sender, bytes[] memory calls)
        private
        view
        returns (bool, string memory)
    {
        (uint64 senderId, bool active) = _activeMember(sender);
        if (!active) return (false, "sender is not an active member");
        if (calls.length == 0) return (false, "batch has no calls");
        if (calls.length > MAX_SPONSORED_CALLS) return (false, "batch has more than 4 calls");
        SentKeys memory sent = _newSentKeys();
        bytes4[] memory selectors = new bytes4[](calls.length);
        for (uint256 i = 0; i < calls.length; ++i) {
            bytes memory data = calls[i];
            // Repeats first: they also bound `sent` to one send and one sendBatch.
            if (data.length >= 4) {
                // casting to 'bytes4' is safe because it takes the first four bytes, checked present above.
                // forge-lint: disable-next-line(unsafe-typecast)
                selectors[i] = bytes4(data);
                for (uint256 j = 0; j < i; ++j) {
                    if (selectors[j] == selectors[i]) {
                        return (false, _callReason(i, "repeats the function of an earlier call"));
                    }
                }
            }
            (bool ok, string memory reason) = _checkMemberCall(senderId, data, sent);
            if (!ok) return (false, _callReason(i, reason));
        }
        return (true, "");
    }

    /// @notice One call of an active member's account into the cluster.
    function _checkMemberCall(uint64 senderId, bytes memory data, SentKeys memory sent)
        private
        view
        returns (bool, string memory)
    {
        if (data.length < 4) return (false, "member call has no function selector");
        // casting to 'bytes4' is safe because it takes the first four bytes, checked present above.
        // forge-lint: disable-next-line(unsafe-typecast)
        bytes4 selector = bytes4(data);
        bytes memory args = _afterSelector(data);
        if (selector == IMessageFacet.send.selector) {
            (uint64 recipient, bytes32 envelopeId, bytes memory ciphertext) =
                abi.decode(args, (uint64, bytes32, bytes));
            string memory rule = _envelopeRule(senderId, recipient, envelopeId, ciphertext.length, sent);
            if (bytes(rule).length != 0) return (false, string.concat("message ", rule));
            return (true, "");
        }
        if (selector == IMessageFacet.sendBatch.selector) {
            return _checkSendBatch(senderId, abi.decode(args, (Envelope[])), sent);
        }
        if (selector == IMemberFacet.commitClusterSharedKey.selector) {
            (uint64 epoch, bytes32 commitment) = abi.decode(args, (uint64, bytes32));
            return _commitRule(MemberStorage.commitRefusal(senderId, epoch, commitment));
        }
        return (false, "member call is not a sponsored cluster function");
    }

    /// @notice The policy's words for the Member facet's commit rule (one rule, two readers).
    function _commitRule(bytes memory refusal) private pure returns (bool, string memory) {
        if (refusal.length == 0) return (true, "");
        // casting to 'bytes4' is safe because it takes the selector, the first four bytes of
        // a custom error's data (commitRefusal returns nothing shorter).
        // forge-lint: disable-next-line(unsafe-typecast)
        bytes4 error = bytes4(refusal);
        if (error == IMemberFacet.NotCurrentCskEpoch.selector) {
            return (false, "CSK epoch is not the current one");
        }
        if (error == IMemberFacet.NotEpochOriginator.selector) {
            return (false, "only the epoch's originator commits its CSK");
        }
        if (error == IMemberFacet.CskAlreadyCommitted.selector) return (false, "CSK commitment already set");
        return (false, "CSK commitment is zero");
    }

    /// @notice Every envelope must be sent now: the policy pays for none it can foresee skipped.
    function _checkSendBatch(uint64 senderId, Envelope[] memory envelopes, SentKeys memory sent)
        private
        view
        returns (bool, string memory)
    {
        if (envelopes.length == 0) return (false, "envelope batch is empty");
        if (envelopes.length > MessageStorage.MAX_BATCH_SIZE) {
            return (false, "envelope batch has more than 64 envelopes");
        }
        for (uint256 i = 0; i < envelopes.length; ++i) {
            Envelope memory e = envelopes[i];
            string memory rule =
                _envelopeRule(senderId, e.recipientMemberId, e.envelopeId, e.ciphertext.length, sent);
            if (bytes(rule).length != 0) {
                return (false, string.concat("envelope ", Strings.toString(i), ": ", rule));
            }
        }
        return (true, "");
    }

    /// @notice The rule an envelope breaks (MessageStorage.check, plus a repeat within this
    ///         operation), or "" when it would be sent; a passing envelope is added to `sent`.
    function _envelopeRule(
        uint64 senderId,
        uint64 recipient,
        bytes32 envelopeId,
        uint256 size,
        SentKeys memory sent
    ) private view returns (string memory) {
        (bool ok, SkipReason reason) = MessageStorage.check(recipient, senderId, envelopeId, size);
        if (!ok) {
            if (reason == SkipReason.EmptyCiphertext) return "ciphertext is empty";
            if (reason == SkipReason.CiphertextTooLarge) return "ciphertext too large";
            if (reason == SkipReason.RecipientNotActive) return "recipient is not an active member";
            return "envelope id already used";
        }
        bytes32 key = keccak256(abi.encode(recipient, envelopeId));
        for (uint256 i = 0; i < sent.count; ++i) {
            if (sent.keys[i] == key) return "repeats the recipient and envelope id of an earlier envelope";
        }
        sent.keys[sent.count++] = key;
        return "";
    }

    function _activeMember(address sender) private view returns (uint64 senderId, bool active) {
        senderId = MemberStorage.idOf(sender);
        active = senderId != 0 && MemberStorage.isActive(sender);
    }

    /// @dev Room for one `send` and one full `sendBatch`: the most one operation can reach, since
    ///      a batch of calls names each function once.
    function _newSentKeys() private pure returns (SentKeys memory sent) {
        sent.keys = new bytes32[](MessageStorage.MAX_BATCH_SIZE + 1);
    }

    function _callReason(uint256 index, string memory reason) private pure returns (string memory) {
        return string.concat("call ", Strings.toString(index), ": ", reason);
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
