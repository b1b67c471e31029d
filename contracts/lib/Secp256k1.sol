// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

/// @title Secp256k1
/// @notice Compressed secp256k1 public keys to Ethereum addresses, on-chain.
/// @dev dstack's signature chain carries 33-byte compressed keys. Decompressing needs a modular
///      square root, done with the modexp precompile (0x05): it is allowed during ERC-4337
///      validation (ERC-7562), unlike a call to another contract.
library Secp256k1 {
    /// @dev The field prime p. p = 3 (mod 4), so sqrt(a) = a^((p+1)/4) when a is a square.
    uint256 internal constant P = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC2F;
    uint256 internal constant SQRT_EXPONENT = (P + 1) / 4;

    /// @notice Decompresses a 33-byte SEC1 key (0x02/0x03 prefix) and returns its Ethereum address.
    /// @return ok False when the encoding is wrong or x is not on the curve.
    /// @return account keccak256(x || y)[12:], the address ecrecover yields for this key.
    function tryToAddress(bytes memory compressed) internal view returns (bool ok, address account) {
        if (compressed.length != 33) return (false, address(0));
        uint8 prefix = uint8(compressed[0]);
        if (prefix != 2 && prefix != 3) return (false, address(0));
        uint256 x;
        assembly ("memory-safe") {
            x := mload(add(compressed, 33))
        }
        if (x >= P) return (false, address(0));
        uint256 rhs = addmod(mulmod(mulmod(x, x, P), x, P), 7, P);
        (bool called, uint256 y) = _modexp(rhs, SQRT_EXPONENT, P);
        if (!called || mulmod(y, y, P) != rhs) return (false, address(0));
        if ((y & 1) != (prefix & 1)) y = P - y;
        return (true, address(uint160(uint256(keccak256(abi.encodePacked(x, y))))));
    }

    function _modexp(uint256 base, uint256 exponent, uint256 modulus)
        private
        view
        returns (bool ok, uint256 result)
    {
        bytes memory input = abi.encodePacked(uint256(32), uint256(32), uint256(32), base, exponent, modulus);
        bytes memory output;
        (ok, output) = address(0x05).staticcall(input);
        if (ok && output.length == 32) result = abi.decode(output, (uint256));
        else ok = false;
    }
}
