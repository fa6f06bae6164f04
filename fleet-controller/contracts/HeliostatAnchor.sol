// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @title Heliostat epoch anchors
/// @notice The fleet controller records one Merkle root per epoch here. An epoch is
/// anchored at most once: a second `anchor` for the same epoch reverts, so a controller
/// that re-sends after a crash can never overwrite or double-anchor.
contract HeliostatAnchor {
    struct Anchor {
        bytes32 root;
        uint64 leafCount;
        uint64 blockNumber;
    }

    /// The only account allowed to anchor (the controller's key).
    address public immutable controller;

    mapping(uint64 => Anchor) private anchors;

    /// The number of epochs anchored so far.
    uint64 public anchoredCount;

    event Anchored(uint64 indexed epoch, bytes32 root, uint64 leafCount);

    error NotController();
    error AlreadyAnchored(uint64 epoch);
    error EmptyEpoch();

    constructor() {
        controller = msg.sender;
    }

    /// @notice Records the tree head of one closed epoch.
    function anchor(uint64 epoch, bytes32 root, uint64 leafCount) external {
        if (msg.sender != controller) revert NotController();
        if (leafCount == 0 || root == bytes32(0)) revert EmptyEpoch();
        if (anchors[epoch].leafCount != 0) revert AlreadyAnchored(epoch);
        anchors[epoch] = Anchor(root, leafCount, uint64(block.number));
        anchoredCount += 1;
        emit Anchored(epoch, root, leafCount);
    }

    /// @notice The anchor of an epoch; all zero when it was never anchored.
    function getAnchor(uint64 epoch)
        external
        view
        returns (bytes32 root, uint64 leafCount, uint64 blockNumber)
    {
        Anchor storage a = anchors[epoch];
        return (a.root, a.leafCount, a.blockNumber);
    }
}
