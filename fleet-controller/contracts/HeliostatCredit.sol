// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @title Heliostat credit token
/// @notice A plain ERC-20 with 6 decimals (one token unit = one micro-credit of the
/// controller's ledger), for the demo and the tests. Its deployer mints. Settlement works
/// with any ERC-20 that returns true from `transfer` and `transferFrom`.
contract HeliostatCredit {
    string public constant name = "Heliostat Credit";
    string public constant symbol = "HSC";
    uint8 public constant decimals = 6;

    /// The only account allowed to mint.
    address public immutable minter;
    uint256 public totalSupply;
    mapping(address => uint256) public balanceOf;
    mapping(address => mapping(address => uint256)) public allowance;

    event Transfer(address indexed from, address indexed to, uint256 value);
    event Approval(address indexed owner, address indexed spender, uint256 value);

    error NotMinter();
    error InsufficientBalance(uint256 held, uint256 asked);
    error InsufficientAllowance(uint256 allowed, uint256 asked);
    error ZeroAddress();

    constructor() {
        minter = msg.sender;
    }

    /// @notice Creates `value` units for `to` (the minter only).
    function mint(address to, uint256 value) external {
        if (msg.sender != minter) revert NotMinter();
        if (to == address(0)) revert ZeroAddress();
        totalSupply += value;
        balanceOf[to] += value;
        emit Transfer(address(0), to, value);
    }

    function transfer(address to, uint256 value) external returns (bool) {
        move(msg.sender, to, value);
        return true;
    }

    function approve(address spender, uint256 value) external returns (bool) {
        allowance[msg.sender][spender] = value;
        emit Approval(msg.sender, spender, value);
        return true;
    }

    function transferFrom(address from, address to, uint256 value) external returns (bool) {
        uint256 allowed = allowance[from][msg.sender];
        if (allowed != type(uint256).max) {
            if (allowed < value) revert InsufficientAllowance(allowed, value);
            allowance[from][msg.sender] = allowed - value;
        }
        move(from, to, value);
        return true;
    }

    function move(address from, address to, uint256 value) private {
        if (to == address(0)) revert ZeroAddress();
        uint256 held = balanceOf[from];
        if (held < value) revert InsufficientBalance(held, value);
        balanceOf[from] = held - value;
        balanceOf[to] += value;
        emit Transfer(from, to, value);
    }
}
