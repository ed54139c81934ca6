"""The user's media in: image animation, video variations, frame interpolation, super-resolution and
extension of a user's clip, and clips longer than one window of the base stage (Make-A-Video,
section 4.4 and figure 6: the same masked networks condition on given frames)."""
