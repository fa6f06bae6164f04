// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

interface IERC20 {
    function transfer(address to, uint256 value) external returns (bool);
    function transferFrom(address from, address to, uint256 value) external returns (bool);
}

/// @title Heliostat settlement of provider earnings
/// @notice Each settlement round the controller publishes one Merkle root over the payouts
/// it moved out of its ledger, and pays the round's total in tokens into this contract. A
/// provider (or anyone on its behalf) claims its payout with a proof, once; the tokens go to
/// the address the provider registered with the controller.
///
/// Leaves: keccak256(bytes.concat(keccak256(abi.encode(round, account, amount)))), hashed
/// twice so that no inner node can pass for a leaf. Inner nodes hash their two children in
/// ascending order (so a proof needs no left/right flags); a node without a sibling moves up
/// a level unchanged.
contract HeliostatSettlement {
    struct Round {
        bytes32 root;
        uint256 total;
        uint256 claimed;
    }

    /// The only account allowed to publish (the controller's key).
    address public immutable controller;
    /// The token payouts are made in.
    IERC20 public immutable token;

    mapping(uint64 => Round) private rounds;
    mapping(uint64 => mapping(address => bool)) private claimedBy;

    event Published(uint64 indexed round, bytes32 root, uint256 total);
    event Claimed(uint64 indexed round, address indexed account, uint256 amount);

    error NotController();
    error AlreadyPublished(uint64 round);
    error EmptyRound();
    error UnknownRound(uint64 round);
    error AlreadyClaimed(uint64 round, address account);
    error BadProof();
    error TransferFailed();

    constructor(IERC20 token_) {
        controller = msg.sender;
        token = token_;
    }

    /// @notice Records round `round`'s root and takes its `total` from the controller (which
    /// must have approved this contract for it).
    function publish(uint64 round, bytes32 root, uint256 total) external {
        if (msg.sender != controller) revert NotController();
        if (root == bytes32(0) || total == 0) revert EmptyRound();
        if (rounds[round].root != bytes32(0)) revert AlreadyPublished(round);
        rounds[round] = Round(root, total, 0);
        emit Published(round, root, total);
        if (!token.transferFrom(msg.sender, address(this), total)) revert TransferFailed();
    }

    /// @notice Pays `amount` to `account` for round `round`, once, if `proof` leads from its
    /// leaf to the round's root.
    function claim(uint64 round, address account, uint256 amount, bytes32[] calldata proof)
        external
    {
        Round storage r = rounds[round];
        if (r.root == bytes32(0)) revert UnknownRound(round);
        if (claimedBy[round][account]) revert AlreadyClaimed(round, account);
        bytes32 node = keccak256(bytes.concat(keccak256(abi.encode(round, account, amount))));
        for (uint256 i = 0; i < proof.length; i++) {
            bytes32 sib = proof[i];
            node = node < sib
                ? keccak256(abi.encodePacked(node, sib))
                : keccak256(abi.encodePacked(sib, node));
        }
        if (node != r.root) revert BadProof();
        claimedBy[round][account] = true;
        r.claimed += amount;
        emit Claimed(round, account, amount);
        if (!token.transfer(account, amount)) revert TransferFailed();
    }

    /// @notice A round's root, total and the amount claimed so far; all zero when unknown.
    function getRound(uint64 round)
        external
        view
        returns (bytes32 root, uint256 total, uint256 claimed)
    {
        Round storage r = rounds[round];
        return (r.root, r.total, r.claimed);
    }

    /// @notice Whether `account` has claimed its payout of round `round`.
    function isClaimed(uint64 round, address account) external view returns (bool) {
        return claimedBy[round][account];
    }
}
