// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {IDiamondCut, IDiamondLoupe, IERC173} from "../diamond/IDiamond.sol";
import {IERC165} from "@openzeppelin/contracts/utils/introspection/IERC165.sol";
import {IMemberFacet} from "../member/IMemberFacet.sol";
import {IMessageFacet} from "../message/IMessageFacet.sol";
import {IAppAuth} from "../registration/IAppAuth.sol";
import {IRegistrationFacet} from "../registration/IRegistrationFacet.sol";
import {ISponsorshipFacet} from "../sponsorship/ISponsorshipFacet.sol";

/// @title ClusterFacets
/// @notice The one source of a cluster's facet selectors and cut, used by the factory, the deploy
///         script and the tests (a test checks these lists against the compiled ABIs).
library ClusterFacets {
    /// @notice Where each facet's code lives (deployed once, shared by every cluster).
    struct Addresses {
        address diamondCut;
        address diamondLoupe;
        address ownership;
        address member;
        address registration;
        address message;
        address sponsorship;
    }

    /// @notice The cut that turns a fresh Diamond (which has only diamondCut) into a cluster.
    function cuts(Addresses memory facets) internal pure returns (IDiamondCut.FacetCut[] memory result) {
        result = new IDiamondCut.FacetCut[](6);
        result[0] = _add(facets.diamondLoupe, loupeSelectors());
        result[1] = _add(facets.ownership, ownershipSelectors());
        result[2] = _add(facets.member, memberSelectors());
        result[3] = _add(facets.registration, registrationSelectors());
        result[4] = _add(facets.message, messageSelectors());
        result[5] = _add(facets.sponsorship, sponsorshipSelectors());
    }

    function cutSelectors() internal pure returns (bytes4[] memory s) {
        s = new bytes4[](1);
        s[0] = IDiamondCut.diamondCut.selector;
    }

    function loupeSelectors() internal pure returns (bytes4[] memory s) {
        s = new bytes4[](5);
        s[0] = IDiamondLoupe.facets.selector;
        s[1] = IDiamondLoupe.facetFunctionSelectors.selector;
        s[2] = IDiamondLoupe.facetAddresses.selector;
        s[3] = IDiamondLoupe.facetAddress.selector;
        s[4] = IERC165.supportsInterface.selector;
    }

    function ownershipSelectors() internal pure returns (bytes4[] memory s) {
        s = new bytes4[](2);
        s[0] = IERC173.owner.selector;
        s[1] = IERC173.transferOwnership.selector;
    }

    function memberSelectors() internal pure returns (bytes4[] memory s) {
        s = new bytes4[](18);
        s[0] = IMemberFacet.getMember.selector;
        s[1] = IMemberFacet.getMemberByAccount.selector;
        s[2] = IMemberFacet.memberIdOf.selector;
        s[3] = IMemberFacet.isActiveMember.selector;
        s[4] = IMemberFacet.memberCount.selector;
        s[5] = IMemberFacet.activeMemberCount.selector;
        s[6] = IMemberFacet.listMembers.selector;
        s[7] = IMemberFacet.listActiveMembers.selector;
        s[8] = IMemberFacet.meshIpOf.selector;
        s[9] = IMemberFacet.meshConfig.selector;
        s[10] = IMemberFacet.clusterFactory.selector;
        s[11] = IMemberFacet.currentCskEpoch.selector;
        s[12] = IMemberFacet.commitClusterSharedKey.selector;
        s[13] = IMemberFacet.revokeMember.selector;
        s[14] = IMemberFacet.cskEpoch.selector;
        s[15] = IMemberFacet.cskGracePeriod.selector;
        s[16] = IMemberFacet.rotateClusterSharedKey.selector;
        s[17] = IMemberFacet.setCskGracePeriod.selector;
    }

    function registrationSelectors() internal pure returns (bytes4[] memory s) {
        s = new bytes4[](21);
        s[0] = IRegistrationFacet.dstack_register.selector;
        s[1] = IRegistrationFacet.verifyDstackProof.selector;
        s[2] = IRegistrationFacet.registrationDigest.selector;
        s[3] = IAppAuth.isAppAllowed.selector;
        s[4] = IRegistrationFacet.setKmsRootAllowed.selector;
        s[5] = IRegistrationFacet.setComposeHashAllowed.selector;
        s[6] = IRegistrationFacet.setDeviceAllowed.selector;
        s[7] = IRegistrationFacet.setAllowAnyDevice.selector;
        s[8] = IRegistrationFacet.setAppIdAllowed.selector;
        s[9] = IRegistrationFacet.kmsRoots.selector;
        s[10] = IRegistrationFacet.composeHashes.selector;
        s[11] = IRegistrationFacet.deviceIds.selector;
        s[12] = IRegistrationFacet.allowAnyDevice.selector;
        s[13] = IRegistrationFacet.appIds.selector;
        s[14] = IRegistrationFacet.isKmsRootAllowed.selector;
        s[15] = IRegistrationFacet.isAppIdAllowed.selector;
        s[16] = IRegistrationFacet.setAdvisoryAllowed.selector;
        s[17] = IRegistrationFacet.setInstancePinned.selector;
        s[18] = IRegistrationFacet.isAdvisoryAllowed.selector;
        s[19] = IRegistrationFacet.pinnedInstance.selector;
        s[20] = IRegistrationFacet.tcbPolicy.selector;
    }

    function messageSelectors() internal pure returns (bytes4[] memory s) {
        s = new bytes4[](5);
        s[0] = IMessageFacet.send.selector;
        s[1] = IMessageFacet.sendBatch.selector;
        s[2] = IMessageFacet.isEnvelopeUsed.selector;
        s[3] = IMessageFacet.maxCiphertextSize.selector;
        s[4] = IMessageFacet.maxBatchSize.selector;
    }

    function sponsorshipSelectors() internal pure returns (bytes4[] memory s) {
        s = new bytes4[](1);
        s[0] = ISponsorshipFacet.checkSponsorship.selector;
    }

    function _add(address facet, bytes4[] memory selectors)
        private
        pure
        returns (IDiamondCut.FacetCut memory)
    {
        return IDiamondCut.FacetCut({
            facetAddress: facet, action: IDiamondCut.FacetCutAction.Add, functionSelectors: selectors
        });
    }
}
