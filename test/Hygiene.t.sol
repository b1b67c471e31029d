// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {Test} from "./utils/Test.sol";
import {Vm} from "./utils/Vm.sol";

/// @notice Checks of the test suite itself, so that a test cannot pass whatever the code does.
contract TestHygieneTest is Test {
    /// @notice No expectRevert in test/ accepts any revert: each names the error (selector and
    ///         arguments, or the reason string). A bare `expectRevert()`, or one given empty
    ///         revert data, passes on any failure at all (a wrong check, an out-of-gas, a typo'd
    ///         call), not only the one the test is about.
    function test_everyExpectRevertNamesTheError() public view {
        Vm.DirEntry[] memory entries = vm.readDir("test", 3);
        uint256 files = 0;
        for (uint256 i = 0; i < entries.length; ++i) {
            if (entries[i].isDir || !_endsWith(bytes(entries[i].path), ".sol")) continue;
            files += 1;
            _checkFile(entries[i].path);
        }
        vm.assertGt(files, 10, "the test sources were read");
    }

    function _checkFile(string memory path) private view {
        bytes memory src = bytes(vm.readFile(path));
        // Split so that this line is not a match itself.
        bytes memory needle = bytes(string.concat(".expect", "Revert("));
        for (uint256 i = 0; i + needle.length <= src.length; ++i) {
            if (src[i] != "." || !_at(src, i, needle)) continue;
            bytes memory args = _argsFrom(src, i + needle.length);
            vm.assertFalse(_acceptsAnyRevert(args), string.concat(path, ": expectRevert(", string(args), ")"));
        }
    }

    /// @dev The call's arguments up to the matching parenthesis, without whitespace.
    function _argsFrom(bytes memory src, uint256 start) private pure returns (bytes memory args) {
        uint256 depth = 1;
        uint256 end = start;
        while (end < src.length) {
            if (src[end] == "(") depth += 1;
            if (src[end] == ")" && --depth == 0) break;
            ++end;
        }
        args = new bytes(end - start);
        uint256 n = 0;
        for (uint256 j = start; j < end; ++j) {
            bytes1 c = src[j];
            if (c != " " && c != "\n" && c != "\t" && c != "\r") args[n++] = c;
        }
        assembly ("memory-safe") {
            mstore(args, n)
        }
    }

    function _acceptsAnyRevert(bytes memory args) private pure returns (bool) {
        bytes32 h = keccak256(args);
        return args.length == 0 || h == keccak256('""') || h == keccak256('hex""')
            || h == keccak256('bytes("")') || h == keccak256("newbytes(0)") || h == keccak256("bytes4(0)");
    }

    function _at(bytes memory src, uint256 i, bytes memory needle) private pure returns (bool) {
        for (uint256 k = 0; k < needle.length; ++k) {
            if (src[i + k] != needle[k]) return false;
        }
        return true;
    }

    function _endsWith(bytes memory s, bytes memory suffix) private pure returns (bool) {
        return s.length >= suffix.length && _at(s, s.length - suffix.length, suffix);
    }
}
