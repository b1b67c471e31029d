// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {IERC165} from "@openzeppelin/contracts/utils/introspection/IERC165.sol";
import {IDiamondCut, IDiamondLoupe, IERC173} from "../diamond/IDiamond.sol";
import {LibDiamond} from "../diamond/LibDiamond.sol";
import {ClusterConfig} from "../lib/ClusterTypes.sol";
import {MemberStorage} from "../member/MemberStorage.sol";
import {IAppAuth} from "../registration/IAppAuth.sol";
import {IRegistrationFacet} from "../registration/IRegistrationFacet.sol";
import {RegistrationStorage} from "../registration/RegistrationStorage.sol";
import {EnumerableSet} from "@openzeppelin/contracts/utils/structs/EnumerableSet.sol";

/// @title ClusterInit
/// @notice Delegatecalled once by the factory's cut: writes a new cluster's initial state.
contract ClusterInit {
    using EnumerableSet for EnumerableSet.AddressSet;
    using EnumerableSet for EnumerableSet.Bytes32Set;

    /// @notice A cluster needs at least one KMS root, or no node could ever register.
    error NoKmsRoots();

    /// @notice Sets ERC-165 flags, the mesh CIDR, the factory and the initial allowlists.
    function init(ClusterConfig calldata config, address factory) external {
        LibDiamond.Layout storage d = LibDiamond.layout();
        d.supportedInterfaces[type(IERC165).interfaceId] = true;
        d.supportedInterfaces[type(IDiamondCut).interfaceId] = true;
        d.supportedInterfaces[type(IDiamondLoupe).interfaceId] = true;
        d.supportedInterfaces[type(IERC173).interfaceId] = true;
        d.supportedInterfaces[type(IAppAuth).interfaceId] = true;

        MemberStorage.init(factory, config.meshNetwork, config.meshPrefixLength);

        if (config.kmsRoots.length == 0) revert NoKmsRoots();
        RegistrationStorage.Layout storage r = RegistrationStorage.layout();
        for (uint256 i = 0; i < config.kmsRoots.length; ++i) {
            if (config.kmsRoots[i] == address(0)) revert IRegistrationFacet.ZeroAddress();
            if (r.kmsRoots.add(config.kmsRoots[i])) {
                emit IRegistrationFacet.KmsRootAllowed(config.kmsRoots[i], true);
            }
        }
        for (uint256 i = 0; i < config.composeHashes.length; ++i) {
            if (r.composeHashes.add(config.composeHashes[i])) {
                emit IRegistrationFacet.ComposeHashAllowed(config.composeHashes[i], true);
            }
        }
        r.allowAnyDevice = config.allowAnyDevice;
        emit IRegistrationFacet.AllowAnyDeviceSet(config.allowAnyDevice);
    }
}
