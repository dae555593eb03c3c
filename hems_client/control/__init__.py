"""The control loop: controller, planners, guard, failsafe, signal book."""
